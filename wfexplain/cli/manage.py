"""The subcommands that bring checkpoints in and show what there is: ``import``, ``upgrade``, ``list``,
``fetch-demo``, and ``dashboard`` (which starts the dashboard in a process of its own)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..atomic import dumps
from ..backbones import list_backbones
from ..checkpoint import MANIFEST_FILE, check_target, load
from ..configs import TrainConfig
from ..data import list_datasets
from ..upgrade import upgrade
from .console import log
from .options import UsageError


def cmd_import(args) -> int:
    from ..importing import import_checkpoint

    if args.img_size is not None and len(args.img_size) > 2:
        raise UsageError("--img-size", f"takes one side or height and width, got {len(args.img_size)} values")
    if args.arch is None and args.weights is None:
        raise UsageError("--arch", "give --arch, --weights or both (a --weights folder's config.json names the architecture)")
    for option in ("mean", "std"):
        values = getattr(args, option)
        if values is not None and args.in_chans is not None and len(values) != args.in_chans:
            raise UsageError(f"--{option}", f"needs one value per channel (--in-chans {args.in_chans}), got {len(values)}")
    try:
        TrainConfig(**args.retrain_config)
    except (TypeError, ValueError) as e:
        raise UsageError("--retrain-config", str(e)) from None
    check_target(args.out, args.force)
    log(f"importing {args.arch} from {args.weights} on {args.dataset}")
    result = import_checkpoint(args.arch, args.weights, args.dataset, args.out, data_dir=args.data_dir,
                               arch_kwargs=args.arch_kwargs, img_size=args.img_size, in_chans=args.in_chans,
                               mean=args.mean, std=args.std, crop_pct=args.crop_pct, interpolation=args.interpolation,
                               torchvision_weights=args.torchvision_weights, head=args.head, sites=args.sites,
                               exclude=args.exclude, overwrite=args.force,
                               retrain_config=TrainConfig(**args.retrain_config), device=args.device,
                               workers=args.workers)
    pre = result["preprocessing"]
    size = pre["img_size"] if isinstance(pre["img_size"], int) else "x".join(map(str, pre["img_size"]))
    log(f"preprocessing: {size} px ({pre['sources']['img_size']}), mean {list(pre['mean'])} "
        f"({pre['sources']['mean']}), std {list(pre['std'])} ({pre['sources']['std']}); crop_pct {pre.get('crop_pct')} "
        f"({pre['sources'].get('crop_pct', 'default')}), {pre.get('interpolation', 'bilinear')} "
        f"({pre['sources'].get('interpolation', 'default')})")
    for note in pre["notes"]:
        log(f"note: {note}")
    log(f"heads (never gated): {', '.join(result['manifest'].heads)}; {result['sites']} gate sites found and probed; "
        f"test accuracy {result['accuracy']:.4f}; saved and loaded back from {args.out}")
    for line in result["coverage"].lines():
        log(line)
    log(f"next: wfexplain unlearn --checkpoint {args.out}")
    return 0


def cmd_upgrade(args) -> int:
    changes = upgrade(args.checkpoint)
    log(f"{args.checkpoint}: " + ("; ".join(changes) if changes else "already in the current format"))
    return 0


def cmd_list(args) -> int:
    from ..shipped import shipped_checkpoints

    if args.checkpoint is not None:
        from ..gate_coverage import coverage

        cov = coverage(load(args.checkpoint))
        print(dumps({"checkpoint": str(args.checkpoint), "coverage": cov.to_json()}) if args.json
              else "\n".join(cov.lines(limit=1000)))
        return 0
    root = Path(args.checkpoints)
    found = sorted(p.parent.name for p in root.glob(f"*/{MANIFEST_FILE}")) if root.is_dir() else []
    shipped = {name: str(path) for name, path in shipped_checkpoints().items()}
    if args.json:
        print(dumps({"backbones": list_backbones(), "datasets": list_datasets(), "checkpoints_dir": str(root),
                     "checkpoints": found, "shipped": shipped}))
        return 0
    print("backbones:", ", ".join(list_backbones()))
    print("datasets: ", ", ".join(list_datasets()))
    print("checkpoints:", ", ".join(found) or f"none under {root}")
    print("shipped:    ", ", ".join(shipped) or "none", "(`wfexplain fetch-demo` copies them out)" if shipped else "")
    return 0


def cmd_fetch_demo(args) -> int:
    from ..shipped import fetch_demo

    for path in fetch_demo(args.out, args.names, overwrite=args.force):
        print(path)
    return 0


def cmd_dashboard(argv: list[str]) -> int:
    """``wfexplain dashboard ...``: the launcher runs in its own process (the library never imports Streamlit)."""
    import subprocess

    try:
        return subprocess.call([sys.executable, "-m", "wfexplain_dashboard", *argv])
    except KeyboardInterrupt:
        return 130


