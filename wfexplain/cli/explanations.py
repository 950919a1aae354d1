"""``wfexplain explanations``: do the memories explain? Deletion curves by memory, activation, gradient x activation
and random rankings (:mod:`wfexplain.explain.deletion`); rankings from training images, accuracies on test images.

The measuring module (and scipy) is imported when the command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse

from ..atomic import dumps
from .console import bar, log
from .options import COUNT, FRACTION, INDEX, UsageError, device, ranged

FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2)  # wfexplain.explain.deletion.FRACTIONS (not imported: it loads scipy)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's own options (the data options are added beside it in :func:`wfexplain.cli.build_parser`)."""
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--classes", type=INDEX, nargs="+", help="classes to measure (default: all)")
    p.add_argument("--forget-set", type=INDEX, nargs="+", action="append", default=[], metavar="C",
                   help="also measure this forget set (repeatable): its filter's components, shared vs unique")
    p.add_argument("--limit", type=COUNT, help="seeded class-stratified subset of N test images (default: all)")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="score on the test split, or on the validation images held out of training (where settings "
                        "are chosen; --record stores it as metrics.validation_explanations)")
    p.add_argument("--train-limit", type=COUNT, default=5000,
                   help="training images behind the activation and gradient rankings (default 5000)")
    p.add_argument("--fractions", type=ranged(float, 0, 1, open_lo=True), nargs="+", default=list(FRACTIONS),
                   metavar="F", help=f"shares of each layer's components switched off (default {' '.join(map(str, FRACTIONS))})")
    p.add_argument("--draws", type=COUNT, default=5, help="random rankings drawn (default 5)")
    p.add_argument("--seed", type=INDEX, default=0, help="seed of the subsets and of the random draws")
    p.add_argument("--threshold", type=FRACTION, default=0.5,
                   help="a gate below it switches a component off (shared vs unique components; default 0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--record", action="store_true", help="store the AUCs and summary as the manifest's "
                                                         "metrics.explanations")
    p.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or cuda:N")


def _check(args, n: int) -> list[list[int]]:
    from .commands import _check_limits

    _check_limits(args, n)
    bad = [c for c in [*(args.classes or []), *(c for s in args.forget_set for c in s)] if c >= n]
    if bad:
        option = "--classes" if bad[0] in (args.classes or []) else "--forget-set"
        raise UsageError(option, f"class {bad[0]} does not exist: valid classes are 0..{n - 1}")
    sets = [sorted(set(s)) for s in args.forget_set]
    if any(len(s) >= n for s in sets):
        raise UsageError("--forget-set", f"a set must leave at least one of the {n} classes retained")
    if not 0 < args.threshold < 1:
        raise UsageError("--threshold", f"must be strictly between 0 and 1, got {args.threshold}")
    return sets


def cmd_explanations(args) -> int:
    from ..checkpoint import load, update_manifest
    from ..data import subset_tensors
    from ..explain.deletion import measure
    from ..explain.deletion_report import compact
    from ..splits import checkpoint_train_split
    from .commands import _scored_split

    model = load(args.checkpoint, args.device)
    manifest = model.checkpoint_manifest()
    sets = _check(args, model.num_classes)
    x, y, _ = subset_tensors(_scored_split(args, manifest), args.limit, args.seed)
    xt, yt, _ = subset_tensors(checkpoint_train_split(manifest, args.data_dir), args.train_limit, args.seed)
    log(f"explanations of {args.checkpoint}: rankings from {len(yt)} training images, accuracies on {len(y)} "
        f"{args.split} images")
    progress_bar, progress = bar("explanations")
    report = measure(model, x, y, xt, yt, classes=args.classes, sets=sets, fractions=args.fractions, draws=args.draws,
                     seed=args.seed, threshold=args.threshold, progress=progress)
    progress_bar.close()
    report = {"checkpoint": str(args.checkpoint), "dataset": model.info.name, "backbone": model.backbone_name,
              "split": args.split, "limit": args.limit, "train_limit": args.train_limit, **report}
    if args.record:
        kept = {k: v for k, v in compact(report).items() if k not in ("checkpoint", "dataset", "backbone")}
        key = "explanations" if args.split == "test" else "validation_explanations"
        update_manifest(args.checkpoint, lambda m: m.replace(metrics={**m.metrics, key: kept}),
                        expect=manifest.files)
    if args.json:
        print(dumps(report))
        return 0
    names, s = model.info.class_names, report["summary"]
    print(f"{args.checkpoint}: {report['num_images']} {args.split} images, original accuracy {report['original_accuracy']:.4f}; "
          f"selectivity = class drop AUC - others' drop AUC (higher: the ranking finds what the class needs)")
    print(f"  {'class':<14s}{'memory':>8s}{'activ.':>8s}{'gradxa':>8s}{'random':>14s}{'rho':>7s}{'top':>6s}  nearest")
    for c, r in report["classes"].items():
        sel = {k: v["auc"]["selectivity"] for k, v in r["rankings"].items()}
        agree, near = r["agreement"]["activation"], report["nearest_class"]["nearest"][int(c)]
        print(f"  {r['name'][:13]:<14s}{sel['memory']:8.3f}{sel['activation']:8.3f}{sel['grad_x_activation']:8.3f}"
              f"{sel['random']:8.3f}±{r['rankings']['random']['auc']['selectivity_std']:.3f}"
              f"{agree['spearman']:7.2f}{agree['top_overlap']:6.2f}  {names[near]}")
    print(f"  memory beats random for {s['memory_beats_random']} of {len(report['classes'])} classes; "
          f"mean selectivity memory {s['memory']['selectivity']:.3f}, random {s['random']['selectivity']:.3f}")
    for key, r in report["sets"].items():
        sel = {k: v["auc"]["selectivity"] for k, v in r["rankings"].items()}
        counts = [sum(d[k] for d in r["components"].values()) for k in ("off", "shared", "unique")]
        print(f"  set {key}: selectivity memory {sel['memory']:.3f}, random {sel['random']:.3f}; {counts[0]} components "
              f"off ({counts[1]} shared with retained classes, {counts[2]} unique)")
    return 0
