"""The ``wfexplain`` command: train, import, unlearn, evaluate, retrain, benchmark, export, upgrade, list.

Logs and progress bars go to stderr; ``--json`` results go to stdout as strict JSON (null, never
NaN). Every option is validated before any work (exit 2, the option named, nothing written);
nothing is overwritten without ``--force``. Ctrl-C stops a training loop cleanly and writes nothing.
``train``, ``unlearn`` and ``evaluate`` run unchanged under ``torchrun`` (README, "Scaling out"): rank 0 logs, prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import distributed as dist
from .atomic import dumps
from .backbones import list_backbones
from .checkpoint import MANIFEST_FILE, CheckpointError, check_target, load, read_manifest, update_manifest, upgrade
from .cliargs import COUNT, FRACTION, INDEX, UsageError, add_config_args, at_least, config_from, ranged
from .data import DatasetError, list_datasets
from .engine import TrainConfig, UnlearnConfig
from .evaluation import evaluate
from .manifest import IMG_SIZE_RANGE
from .pipeline import checkpoint_split, train_checkpoint, unlearn_checkpoint


def log(msg: str) -> None:
    if dist.is_main() and os.environ.get("RANK", "0") == "0":  # RANK: also after the process group is gone
        print(msg, file=sys.stderr, flush=True)


def _error(msg: str) -> None:
    """Errors are printed by every rank, prefixed with it under torchrun."""
    prefix = f"[rank {os.environ.get('RANK', '?')}] " if dist.launched() else ""
    print(f"{prefix}error: {msg}", file=sys.stderr, flush=True)


class _Interrupt:
    """SIGINT sets a flag the loops poll, so they stop between steps."""

    def __init__(self):
        self.stop = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        self.stop = True
        log("\ninterrupt: stopping after this step (nothing will be written)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)

    def __call__(self) -> bool:
        return self.stop


class _Bar:
    """A tqdm bar on stderr, drawn from the first progress report on (an early error prints no empty bar)."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def progress(self, step: int, total: int, metrics: dict) -> None:
        if self.bar is None:
            self.bar = tqdm(desc=self.desc, file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
                            disable=not dist.is_main())
        self.bar.total = total
        self.bar.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in metrics.items()}, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _bar(desc: str):
    bar = _Bar(desc)
    return bar, bar.progress


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset directory (default: $WFEXPLAIN_DATA or the dataset's system path)")
    p.add_argument("--download", action="store_true", help="allow downloading CIFAR-10 (explicit opt-in)")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N; under torchrun cuda = the rank's local GPU")
    p.add_argument("--workers", type=INDEX, default=0, help="data-loading processes that stream images (default 0)")
    p.add_argument("--backend", choices=["gloo", "nccl"],
                   help="torch.distributed backend under torchrun (default: nccl on cuda, gloo on cpu)")


def _check_limits(args, num_classes: int) -> None:
    """Limits that would leave a class without images (NaN metrics) or no full batch."""
    classes = f"one image of each of the {num_classes} classes"
    at_least("--limit-train", getattr(args, "limit_train", None), max(num_classes, getattr(args, "batch_size", 1)),
             f"{classes} and one batch of --batch-size {getattr(args, 'batch_size', 1)}")
    for option in ("limit", "eval_limit", "train_limit"):
        at_least("--" + option.replace("_", "-"), getattr(args, option, None), num_classes, classes)


def cmd_train(args) -> int:
    out = Path(args.out)
    at_least("--limit-train", args.limit_train, args.batch_size, f"one batch of --batch-size {args.batch_size}")
    check_target(out, args.force)  # before any work (train_checkpoint checks again)
    log(f"training {args.backbone} on {args.dataset} -> {out}")
    bar, progress = _bar("train")
    with _Interrupt() as stop:
        result = train_checkpoint(args.dataset, args.backbone, out, config_from(args, TrainConfig), args.data_dir,
                                  args.download, args.img_size, args.limit_train, args.half, progress, stop,
                                  overwrite=args.force, device=args.device, workers=args.workers,
                                  in_chans=args.in_chans)
    bar.close()
    if result["cancelled"]:
        log("cancelled: no checkpoint written")
        return 130
    log(f"test accuracy {result['accuracy']:.4f} after {result['seconds']:.0f} s; saved {out}")
    return 0


def cmd_unlearn(args) -> int:
    n = read_manifest(args.checkpoint).dataset.num_classes
    _check_limits(args, n)
    if args.max_set_size >= n:
        raise UsageError("--max-set-size", f"must be below the number of classes ({n}), got {args.max_set_size}")
    log(f"unlearning all classes of {args.checkpoint} (backbone frozen)")
    bar, progress = _bar("unlearn")
    with _Interrupt() as stop:
        result = unlearn_checkpoint(args.checkpoint, config_from(args, UnlearnConfig), args.out, args.data_dir,
                                    args.download, args.limit_train, args.eval_limit, progress, stop,
                                    device=args.device, workers=args.workers, force=args.force)
    bar.close()
    if result["cancelled"]:
        log("cancelled: checkpoint left unchanged")
        return 130
    log(f"trained memory in {result['seconds']:.0f} s: {dumps(result['single'])}")
    log(f"memory digest {result['memory_digest']} (identical on all {result['world_size']} process(es))")
    log(f"saved {result['path']}")
    return 0


def cmd_evaluate(args) -> int:
    model = load(args.checkpoint, args.device)
    assert model.manifest is not None
    _check_limits(args, model.num_classes)
    name = model.info.name
    test = checkpoint_split(model.manifest, "test", args.data_dir, args.download)
    bar, progress = _bar("evaluate")
    report = evaluate(model, test, limit=args.limit, pairs=args.pairs, seed=args.seed, progress=progress,
                      hard_threshold=args.hard_threshold, workers=args.workers)
    bar.close()
    report = {"checkpoint": str(args.checkpoint), "dataset": name, "backbone": model.backbone_name, **report}
    if not dist.is_main():
        return 0
    if args.record:
        kept = {k: v for k, v in report.items()
                if k not in ("checkpoint", "dataset", "backbone", "forget_matrix", "original_per_class")}
        m = model.manifest
        update_manifest(args.checkpoint, m.replace(metrics={**m.metrics, "evaluation": {"limit": args.limit, **kept}}))
    if args.json:
        print(dumps(report))
    else:
        print(f"{report['checkpoint']}: {report['num_images']} test images, "
              f"original accuracy {report['original_accuracy']:.4f}")
        for key in ("single", "pairs"):
            if key in report:
                r = report[key]
                print(f"  {key:6s} forget mean {r['forget_accuracy_mean']:.4f} (lower is better), "
                      f"max {r['forget_accuracy_max']:.4f}; retain mean {r['retain_accuracy_mean']:.4f} "
                      f"vs original {r['original_retain_accuracy_mean']:.4f} (higher is better)")
    return 0


def cmd_retrain(args) -> int:
    from .benchmark import retrain

    log(f"retraining {args.checkpoint} from scratch without class(es) {args.forget} (seed {args.seed})")
    bar, progress = _bar("retrain")
    with _Interrupt() as stop:
        result = retrain(args.checkpoint, args.forget, args.seed, args.data_dir, progress, stop,
                         device=args.device, workers=args.workers, overwrite=args.force)
    bar.close()
    if result["cancelled"]:
        log("cancelled: nothing written")
        return 130
    log(f"trained in {result['seconds']:.0f} s; saved {result['path']}")
    return 0


def cmd_benchmark(args) -> int:
    from .benchmark import run_benchmark

    extra = {}
    for item in args.byo or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--byo expects NAME=PATH, got {item!r}")
        extra[name] = path
    _check_limits(args, read_manifest(args.checkpoint).dataset.num_classes)
    bar, progress = _bar("benchmark")
    with _Interrupt() as stop:
        bench = run_benchmark(args.checkpoint, args.forget, args.seeds, args.methods, args.limit, args.train_limit,
                              args.wf_round, extra, args.data_dir, progress, stop,
                              out=args.out or "auto", command="wfexplain " + " ".join(sys.argv[1:]),
                              resume=not args.no_store, force=args.force)
    bar.close()
    if bench is None:
        log("cancelled: nothing written")
        return 130
    log(f"wrote benchmark.json, benchmark.md, benchmark.tex to {args.out or args.checkpoint}")
    if args.json:
        print(dumps(bench))
    else:
        from .benchmark import benchmark_table

        print(benchmark_table(bench, "md"))
    return 0


def cmd_export(args) -> int:
    from .export import export_all  # matplotlib/pandas: imported only when exporting

    model = load(args.checkpoint)
    _check_limits(args, model.num_classes)
    bad = [c for c in args.forget if c >= model.num_classes]
    if bad:
        raise UsageError("--forget", f"class {bad[0]} does not exist: valid classes are 0..{model.num_classes - 1}")
    report = None
    if not args.no_metrics:
        test = checkpoint_split(model.manifest, "test", args.data_dir, args.download)
        report = evaluate(model, test, limit=args.limit)
    paths = export_all(model, args.out, forget=args.forget, layers=args.layers, formats=args.formats, report=report,
                       order_mode=args.order, hard_threshold=args.hard_threshold, overwrite=args.force)
    for p in paths:
        print(p)
    return 0


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def cmd_import(args) -> int:
    from .importing import import_checkpoint

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
                               mean=args.mean, std=args.std, head=args.head, overwrite=args.force,
                               retrain_config=TrainConfig(**args.retrain_config), device=args.device,
                               workers=args.workers)
    log(f"{result['sites']} gate sites found and probed; test accuracy {result['accuracy']:.4f}; saved {args.out}")
    log(f"next: wfexplain unlearn --checkpoint {args.out}")
    return 0


def cmd_upgrade(args) -> int:
    changes = upgrade(args.checkpoint)
    log(f"{args.checkpoint}: " + ("; ".join(changes) if changes else "already in the current format"))
    return 0


def cmd_list(args) -> int:
    print("backbones:", ", ".join(list_backbones()))
    print("datasets: ", ", ".join(list_datasets()))
    root = Path(args.checkpoints)
    found = sorted(p.parent.name for p in root.glob(f"*/{MANIFEST_FILE}")) if root.is_dir() else []
    print("checkpoints:", ", ".join(found) or f"none under {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfexplain",
        description="Multi-class unlearning by weight filtering (Poppi et al., arXiv 2304.02049).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the original classifier and write a checkpoint directory")
    p.add_argument("--dataset", required=True, choices=list_datasets())
    p.add_argument("--backbone", default="cnn", choices=list_backbones())
    p.add_argument("--out", required=True, help="checkpoint directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing --out, whole (what it held is dropped)")
    p.add_argument("--half", action="store_true", help="store weights as float16 (halves the size)")
    p.add_argument("--img-size", type=ranged(int, *IMG_SIZE_RANGE), help="input side for imagefolder (default 64)")
    p.add_argument("--in-chans", type=int, choices=[1, 3],
                   help="imagefolder colour mode: 1 grayscale, 3 RGB (default: the majority of train/, warned if mixed)")
    p.add_argument("--limit-train", type=COUNT, help="train on a stratified subset of this many images")
    _add_data_args(p)
    add_config_args(p, TrainConfig)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("unlearn", help="train the memory matrices of all classes in one round")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", help="write the result to another directory (default: update --checkpoint)")
    p.add_argument("--force", action="store_true",
                   help="replace trained memory matrices in place, or an existing --out (whole)")
    p.add_argument("--limit-train", type=COUNT, help="train on a stratified subset of this many images")
    p.add_argument("--eval-limit", type=COUNT, help="test images for the evaluation stored in the manifest")
    _add_data_args(p)
    add_config_args(p, UnlearnConfig)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("evaluate", help="forget matrix and forget/retain accuracy of every class (and pair)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--limit", type=COUNT, help="seeded class-stratified subset of N test images")
    p.add_argument("--pairs", action="store_true", help="also evaluate every pair of classes")
    p.add_argument("--seed", type=INDEX, default=0, help="seed of the --limit subset")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--record", action="store_true", help="store the summary in the checkpoint's manifest")
    p.add_argument("--hard-threshold", type=FRACTION,
                   help="evaluate hard-baked models: components whose gate is below this (0..1) are zeroed")
    _add_data_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("retrain", help="train the Retrain oracle: same recipe, from scratch, without the forget class(es)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--forget", type=INDEX, nargs="+", required=True, help="class index(es) left out")
    p.add_argument("--seed", type=INDEX, default=0, help="training seed (stored as <checkpoint>/retrain/forget-C-seedS)")
    p.add_argument("--force", action="store_true", help="replace an existing oracle")
    _add_data_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("benchmark", help="Retrain vs WF vs five baselines on every metric, over seeds")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--forget", type=INDEX, nargs="*", help="classes forgotten one at a time (default: all)")
    p.add_argument("--seeds", type=COUNT, default=3, help="seeds per method and class (default 3)")
    p.add_argument("--methods", nargs="*", help="subset of: retrain wf finetune neggrad_plus random_labels salun ssd")
    p.add_argument("--limit", type=COUNT, help="test images (seeded, class-stratified; default all)")
    p.add_argument("--train-limit", type=COUNT, default=10_000, help="training images behind train metrics, MIA, probe")
    p.add_argument("--wf-round", choices=["run", "checkpoint"], default="run",
                   help="rerun and time WF's all-class round per seed (default) or reuse the checkpoint's memory")
    p.add_argument("--byo", nargs="*", metavar="NAME=PATH",
                   help="score your own safetensors state dict(s) of the same backbone (one forget class)")
    p.add_argument("--out", help="directory for benchmark.json/.md/.tex (default: the checkpoint)")
    p.add_argument("--force", action="store_true",
                   help="replace a benchmark.json that covers classes or seeds this run does not")
    p.add_argument("--no-store", action="store_true",
                   help="neither reuse nor keep results in <checkpoint>/benchmark-runs/ (default: an interrupted or "
                        "partial run resumes from there)")
    p.add_argument("--json", action="store_true", help="print the benchmark JSON to stdout")
    _add_data_args(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("export", help="paper figures, memory CSV/NPZ, metric tables (CSV/LaTeX), baked model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--forget", type=INDEX, nargs="*", default=[], help="classes to bake into an exported model")
    p.add_argument("--hard-threshold", type=FRACTION,
                   help="zero components whose gate is below this (0..1) in the baked model")
    p.add_argument("--layers", nargs="*", help="layers in the heatmap figure (default: all)")
    p.add_argument("--order", default="original", choices=["original", "specificity", "clustered"],
                   help="component order in the heatmaps")
    p.add_argument("--formats", nargs="*", default=["png", "svg", "pdf"], choices=["png", "svg", "pdf"])
    p.add_argument("--limit", type=COUNT, default=2000, help="test images behind the metric tables")
    p.add_argument("--no-metrics", action="store_true", help="skip the evaluation and the metric tables")
    p.add_argument("--force", action="store_true", help="replace files that already exist in --out")
    _add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="make a checkpoint of a classifier trained elsewhere (timm, torchvision, your own)")
    p.add_argument("--arch", required=True, help="timm:NAME, torchvision:NAME or package.module:factory (imported: "
                                                 "you trust it; later commands need WFEXPLAIN_TRUSTED_MODULES for it)")
    p.add_argument("--arch-kwargs", type=_json_object, default={}, help="JSON keyword arguments of the architecture")
    p.add_argument("--weights", required=True, help="state dict: .safetensors, or .pt/.pth (torch.load weights_only)")
    p.add_argument("--dataset", required=True, choices=list_datasets(), help="the classes and images it was trained on")
    p.add_argument("--img-size", type=ranged(int, *IMG_SIZE_RANGE),
                   help="input side (default: the dataset's; 64 for imagefolder)")
    p.add_argument("--in-chans", type=int, choices=[1, 3], help="input channels (default: the dataset's)")
    p.add_argument("--mean", type=float, nargs="+", help="per-channel normalisation mean (default: the dataset's)")
    p.add_argument("--std", type=ranged(float, 0, open_lo=True), nargs="+", help="per-channel std (default: the dataset's)")
    p.add_argument("--head", nargs="+", help="classifier head module path(s) (default: found automatically)")
    p.add_argument("--retrain-config", type=_json_object, default={},
                   help="JSON TrainConfig fields of the recipe the benchmark's Retrain oracle uses (default: TrainConfig)")
    p.add_argument("--out", required=True, help="checkpoint directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing --out, whole")
    _add_data_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("upgrade", help="rewrite an older checkpoint's manifest in the current format, recording "
                                       "the SHA-256 of the files present (you vouch for them)")
    p.add_argument("--checkpoint", required=True)
    p.set_defaults(func=cmd_upgrade)

    p = sub.add_parser("list", help="list backbones, datasets and checkpoints")
    p.add_argument("--checkpoints", default="checkpoints", help="directory to scan")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if hasattr(args, "device"):
            args.device = dist.resolve_device(args.device)
            with dist.session(args.device, args.backend):
                rc = args.func(args)
        else:
            rc = args.func(args)
    except FileExistsError as e:
        _error(str(e) if "--force" in str(e) else f"{e} (pass --force to overwrite)")
        return 2
    except UsageError as e:
        _error(str(e))
        return 2
    except (CheckpointError, DatasetError, dist.DistributedError, ValueError, OSError) as e:
        _error(str(e))
        return 2
    except RuntimeError as e:
        if not (dist.launched() and dist.lost_peer(e)):
            raise
        _error(f"lost contact with another rank, which failed (its error is above): {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    log(f"done in {time.perf_counter() - start:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
