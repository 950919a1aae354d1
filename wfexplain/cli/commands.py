"""The ``wfexplain`` subcommands: each checks its options against the checkpoint, runs, logs, returns an exit code.

Logs (:mod:`logging`) and progress bars go to stderr (:mod:`wfexplain.cli.console`); results to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .. import distributed as dist
from ..atomic import check_space, dumps
from ..checkpoint import MODEL_FILE, check_target, load, read_manifest, update_manifest
from ..configs import RemovalConfig, TrainConfig, UnlearnConfig
from ..evaluation import evaluate
from ..evaluation.metrics import forget_accuracy, retain_accuracy
from ..pipeline import train_checkpoint, unlearn_checkpoint
from ..splits import checkpoint_split, checkpoint_train_split, checkpoint_validation_split
from .console import Interrupt as _Interrupt
from .console import bar as _bar
from .console import log
from .options import UsageError, at_least, config_from


def _check_limits(args, num_classes: int) -> None:
    """Limits that would leave a class without images (NaN metrics) or no full batch."""
    classes = f"one image of each of the {num_classes} classes"
    at_least("--limit-train", getattr(args, "limit_train", None), max(num_classes, getattr(args, "batch_size", 1)),
             f"{classes} and one batch of --batch-size {getattr(args, 'batch_size', 1)}")
    for option in ("limit", "eval_limit", "train_limit"):
        at_least("--" + option.replace("_", "-"), getattr(args, option, None), num_classes, classes)


def _forget_classes(forget: list[int], num_classes: int, allow_empty: bool) -> list[int]:
    """``--forget`` as sorted unique classes, or a :class:`UsageError` naming the valid range."""
    from ..forget import classes

    try:
        return classes(forget, num_classes, allow_empty=allow_empty)
    except ValueError as e:
        raise UsageError("--forget", str(e)) from None


def _check_tensorboard(args) -> None:
    """A --tensorboard that cannot be honoured is refused before the work, not after it."""
    import importlib.util

    if args.tensorboard is not None and importlib.util.find_spec("tensorboard") is None:
        raise UsageError("--tensorboard", "needs the tensorboard package (pip install tensorboard)")


def cmd_train(args) -> int:
    _check_tensorboard(args)
    out = Path(args.out)
    at_least("--limit-train", args.limit_train, args.batch_size, f"one batch of --batch-size {args.batch_size}")
    check_target(out, args.force)  # before any work (train_checkpoint checks again)
    log(f"training {args.backbone} on {args.dataset} -> {out}")
    bar, progress = _bar("train")
    with _Interrupt() as stop:
        result = train_checkpoint(args.dataset, args.backbone, out, config_from(args, TrainConfig), args.data_dir,
                                  args.download, args.img_size, args.limit_train, args.half, progress, stop,
                                  overwrite=args.force, device=args.device, workers=args.workers,
                                  in_chans=args.in_chans, val_fraction=args.val_fraction, tensorboard=args.tensorboard)
    bar.close()
    if result["cancelled"]:
        log("cancelled: no checkpoint written")
        return 130
    log(f"test accuracy {result['accuracy']:.4f} after {result['seconds']:.0f} s; saved {out}")
    return 0


def cmd_unlearn(args) -> int:
    _check_tensorboard(args)
    n = read_manifest(args.checkpoint).dataset.num_classes
    _check_limits(args, n)
    if args.max_set_size >= n:
        raise UsageError("--max-set-size", f"must be below the number of classes ({n}), got {args.max_set_size}")
    log(f"unlearning all classes of {args.checkpoint} (backbone frozen)")
    bar, progress = _bar("unlearn")
    with _Interrupt() as stop:
        result = unlearn_checkpoint(args.checkpoint, config_from(args, UnlearnConfig), args.out, args.data_dir,
                                    args.download, args.limit_train, args.eval_limit, progress, stop,
                                    device=args.device, workers=args.workers, force=args.force,
                                    tensorboard=args.tensorboard)
    bar.close()
    if result["cancelled"]:
        log("cancelled: checkpoint left unchanged")
        return 130
    log(f"trained memory in {result['seconds']:.0f} s; validation: {dumps(result['validation'])}")
    log(f"test: {dumps(result['single'])}")
    log(f"memory digest {result['memory_digest']} (identical on all {result['world_size']} process(es))")
    log(f"saved {result['path']}")
    return 0


def _scored_split(args, manifest):
    """The images ``--split`` names: the test split, or the validation images the checkpoint holds out."""
    if args.split == "test":
        return checkpoint_split(manifest, "test", args.data_dir, args.download)
    val = checkpoint_validation_split(manifest, args.data_dir)
    if val is None:
        raise UsageError("--split", f"{args.checkpoint} records no validation split (made with --val-fraction 0, "
                                    "or before validation splits): unlearn it once to hold one out")
    return val


def cmd_evaluate(args) -> int:
    model = load(args.checkpoint, args.device)
    manifest = model.checkpoint_manifest()
    _check_limits(args, model.num_classes)
    for size in args.sets or ():
        if size >= model.num_classes:
            raise UsageError("--sets", f"set sizes must be in 1..{model.num_classes - 1} (below the number of "
                                       f"classes, {model.num_classes}), got {size}")
    name = model.info.name
    test = _scored_split(args, manifest)
    bar, progress = _bar("evaluate")
    report = evaluate(model, test, limit=args.limit, pairs=args.pairs, seed=args.seed, progress=progress,
                      hard_threshold=args.hard_threshold, workers=args.workers, sets=args.sets, samples=args.samples)
    bar.close()
    report = {"checkpoint": str(args.checkpoint), "dataset": name, "backbone": model.backbone_name, "split": args.split,
              **report}
    if not dist.is_main():
        return 0
    if args.record:
        kept = {k: v for k, v in report.items()
                if k not in ("checkpoint", "dataset", "backbone", "forget_matrix", "original_per_class")}
        evaluation = {"limit": args.limit, **kept}
        key = "evaluation" if args.split == "test" else "validation_evaluation"
        update_manifest(args.checkpoint, lambda m: m.replace(metrics={**m.metrics, key: evaluation}),
                        expect=manifest.files)  # merged into the manifest as it is now; refused if the weights changed
    if args.json:
        print(dumps(report))
    else:
        names = model.info.class_names
        print(f"{report['checkpoint']}: {report['num_images']} {args.split} images, "
              f"original accuracy {report['original_accuracy']:.4f}")
        for size, r in report["sets"].items():
            count = f"{r['count']} sampled" if r["sampled"] else f"all {r['count']}"
            print(f"  size {size}: {count:>10s} sets, forget mean {r['forget_accuracy_mean']:.4f} / max "
                  f"{r['forget_accuracy_max']:.4f} (lower is better); retain mean {r['retain_accuracy_mean']:.4f} "
                  f"(original {r['original_retain_accuracy_mean']:.4f}); worst {{{', '.join(names[c] for c in r['worst'])}}}")
    return 0


def cmd_retrain(args) -> int:
    from ..pipeline import retrain

    _forget_classes(args.forget, read_manifest(args.checkpoint).dataset.num_classes, allow_empty=False)
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
    from ..benchmark.catalogue import markdown_tables
    from ..benchmark.runner import BenchmarkConfig, run_benchmark

    if args.list:
        print(markdown_tables(), end="")
        return 0
    if not args.checkpoint:
        raise UsageError("--checkpoint", "is required (or --list)")
    extra = {}
    for item in args.byo or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError("--byo", f"expects NAME=PATH, got {item!r}")
        extra[name] = path
    n = read_manifest(args.checkpoint).dataset.num_classes
    _check_limits(args, n)
    _forget_classes(args.forget or [], n, allow_empty=True)
    bar, progress = _bar("benchmark")
    with _Interrupt() as stop:
        config = BenchmarkConfig(
            forget_classes=tuple(args.forget) if args.forget is not None else None, pairs=args.pairs,
            triples=args.triples, seeds=args.seeds, combination_seeds=args.combination_seeds,
            methods=tuple(args.methods) if args.methods else None,
            tune=not args.no_tune, tune_only=args.tune_only, limit=args.limit, train_limit=args.train_limit,
            val_limit=args.val_limit,
            wf_round=args.wf_round, extra=extra, data_dir=args.data_dir, device=str(args.device), out=args.out or "auto",
            command="wfexplain " + " ".join(sys.argv[1:]), resume=not args.no_store, force=args.force,
            explanations=not args.no_explanations)
        bench = run_benchmark(args.checkpoint, config, progress, stop)
    bar.close()
    if bench is None:
        log("cancelled: nothing written")
        return 130
    if args.tune_only:
        if args.json:
            print(dumps(bench["tuning"]))
        return 0
    log(f"wrote benchmark.json, .md, .tex and .csv to {args.out or args.checkpoint}")
    if args.json:
        print(dumps(bench))
    else:
        from ..benchmark.reports import benchmark_table

        print(benchmark_table(bench, "md"))
    return 0


def cmd_export(args) -> int:
    from ..export import check_outputs, export_all

    model = load(args.checkpoint)
    _check_limits(args, model.num_classes)
    bad = [c for c in args.forget if c >= model.num_classes]
    if bad:
        raise UsageError("--forget", f"class {bad[0]} does not exist: valid classes are 0..{model.num_classes - 1}")
    if args.onnx and not args.forget:
        raise UsageError("--onnx", "exports the baked model: give the classes to forget with --forget")
    check_outputs(args.out, args.formats, args.forget, args.hard_threshold, not args.no_metrics, args.force, args.onnx)
    report = None
    if not args.no_metrics:
        test = checkpoint_split(model.checkpoint_manifest(), "test", args.data_dir, args.download)
        report = evaluate(model, test, limit=args.limit)
    paths = export_all(model, args.out, forget=args.forget, layers=args.layers, formats=args.formats, report=report,
                       order_mode=args.order, hard_threshold=args.hard_threshold, overwrite=args.force, onnx=args.onnx)
    for p in paths:
        print(p)
    return 0


def cmd_remove(args) -> int:
    from ..data import subset_tensors
    from ..export import removed_safetensors, write_bytes
    from ..filtering import bake
    from ..removal import remove

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError("--out", f"must name a .safetensors file, got {out.name!r}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists")
    model = load(args.checkpoint, args.device)
    _check_limits(args, model.num_classes)
    classes = _forget_classes(args.forget, model.num_classes, allow_empty=False)
    if len(classes) == model.num_classes:
        raise UsageError("--forget", f"would remove all {model.num_classes} classes: keep at least one")
    manifest = model.checkpoint_manifest()
    check_space(out, (Path(args.checkpoint) / MODEL_FILE).stat().st_size)  # before the repair, not after it
    cfg = config_from(args, RemovalConfig)
    train = checkpoint_train_split(manifest, args.data_dir)
    log(f"removing {[model.info.class_names[c] for c in classes]} from {args.checkpoint}: hard bake at "
        f"{cfg.threshold:g}, prune, {cfg.steps} repair steps on retain images")
    bar, progress = _bar("repair")
    with _Interrupt() as stop:
        result = remove(model, classes, train, cfg, progress, stop)
    bar.close()
    if result["cancelled"]:
        log("cancelled: nothing written")
        return 130
    net = result["model"]
    write_bytes(out, removed_safetensors(model, classes, result, cfg), overwrite=args.force)
    x, y, _ = subset_tensors(checkpoint_split(manifest, "test", args.data_dir, args.download), args.limit)
    report = {"forget": classes, "removed_weights": result["removed_weights"], "repair_seconds": result["seconds"],
              "test_images": len(y), "path": str(out)}
    device = next(net.parameters()).device
    for name, m in (("soft_bake", bake(model, classes).to(device)), ("removed", net)):
        with torch.no_grad():
            pred = torch.cat([m(b.to(device)).argmax(1).cpu() for b in x.split(500)])
        report[name] = {"forget_accuracy": forget_accuracy(pred, y, classes),
                        "retain_accuracy": retain_accuracy(pred, y, classes)}
    log(f"removed {result['removed_weights']} weights, repaired in {result['seconds']:.0f} s; test "
        f"({len(y)} images): soft bake {dumps(report['soft_bake'])}, removed {dumps(report['removed'])}")
    log(f"saved {out}")
    if args.json:
        print(dumps(report))
    return 0
