"""Does removal resist relearning? A study (issue 14, item 5) of wfexplain.removal against Retrain.

    .venv/bin/python scripts/relearn_study.py [--checkpoint checkpoints/fmnist-cnn] [--split test|heldout]
        [--repair 1000:1e-3 ...] [--pairs 4] [--json runs/relearn.json]

Weight filtering (Poppi et al., arXiv 2304.02049) *suppresses* a class: a soft bake scales weights, a
hard bake (:func:`wfexplain.bake` with ``hard_threshold``) zeroes the components whose gate is below
the threshold, and the *pruned* hard bake (:func:`wfexplain.removal.removal_masks`) also zeroes every
weight that only those components feed. :func:`wfexplain.removal.remove` then *repairs* the pruned
bake on retain training images only (``--repair STEPS:LR``, several allowed), the removed weights
held at zero.

This script measures relearn time (Golatkar et al., CVPR 2020; see
:func:`wfexplain.evaluation.metrics.relearn_steps`: Adam steps on 32 training images of the forgotten
classes until half of their held-out images are recognised again; higher = harder to relearn) of each
model, at two learning rates, for every single class and the first ``--pairs`` pairs, against the
stored Retrain oracles where the checkpoint has them (``wfexplain retrain --forget 0 1`` trains one
for a pair), with the retain accuracy each costs. ``--split heldout`` measures on training images the
repair never sees (to choose the repair's settings), ``--split test`` on the test split.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch
from torch.utils.data import Subset

import wfexplain
from wfexplain.data import subset_tensors
from wfexplain.evaluation.metrics import forget_accuracy, in_set, relearn_steps, retain_accuracy
from wfexplain.filtering import bake
from wfexplain.pipeline import oracle_path
from wfexplain.removal import RemovalConfig, removal_masks, remove
from wfexplain.splits import checkpoint_split


def _repair(text: str) -> tuple[int, float]:
    steps, lr = text.split(":")
    return int(steps), float(lr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/fmnist-cnn")
    ap.add_argument("--threshold", type=float, default=0.5, help="hard-bake threshold")
    ap.add_argument("--split", choices=["test", "heldout"], default="test",
                    help="where retain accuracy and relearning are measured (heldout: training images the repair "
                         "never sees)")
    ap.add_argument("--limit", type=int, default=2000, help="images of --split (retain accuracy, relearn evaluation)")
    ap.add_argument("--repair", type=_repair, nargs="*", default=[(1000, 1e-3)], metavar="STEPS:LR",
                    help="repair settings of the removed models (default 1000:1e-3)")
    ap.add_argument("--pairs", type=int, default=45, help="how many pairs (in order {0,1}, {0,2}, ...) to study")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = wfexplain.load(args.checkpoint)
    train = checkpoint_split(model.manifest, "train")
    held = torch.zeros(len(train), dtype=torch.bool)
    if args.split == "test":
        x, y, _ = subset_tensors(checkpoint_split(model.manifest, "test"), args.limit)
    else:
        x, y, idx = subset_tensors(train, args.limit, seed=2)
        held[idx] = True
    xt, yt, tidx = subset_tensors(train, 5000, seed=1)  # the relearning images and the pruning probe
    xt, yt = xt[~held[tidx]], yt[~held[tidx]]
    fit = Subset(train, torch.nonzero(~held).flatten().tolist())  # what the repair may train on
    fit.targets = train.targets[~held]  # type: ignore[attr-defined]
    n = model.num_classes
    rows = []
    pairs = list(itertools.combinations(range(n), 2))[:args.pairs]
    for forget in [*((c,) for c in range(n)), *pairs]:
        fm, ft = in_set(yt, forget), in_set(y, forget)
        few = torch.nonzero(fm).flatten()[torch.randperm(int(fm.sum()), generator=torch.Generator().manual_seed(0))[:32]]
        nets = {"original": bake(model, None), "soft bake": bake(model, list(forget)),
                "hard bake": bake(model, list(forget), args.threshold)}
        nets["pruned hard bake"], masks = removal_masks(model, list(forget), args.threshold, xt[:16])
        seconds = {}
        for steps, lr in args.repair:
            out = remove(model, list(forget), fit, RemovalConfig(threshold=args.threshold, steps=steps, lr=lr))
            nets[f"removed ({steps} steps, lr {lr:g})"], seconds[f"{steps}:{lr:g}"] = out["model"], out["seconds"]
        oracle = oracle_path(args.checkpoint, forget, 0)
        if (oracle / "manifest.json").is_file():
            nets["Retrain"] = wfexplain.load(oracle).backbone
        row = {"forget": list(forget), "removed_weights": int(sum(int(m.sum()) for m in masks.values())),
               "repair_seconds": seconds}
        for name, net in nets.items():
            with torch.no_grad():
                pred = torch.cat([net(b).argmax(1) for b in x.split(500)])
            row[name] = {"retain": retain_accuracy(pred, y, forget), "forget": forget_accuracy(pred, y, forget),
                         **{f"relearn_lr{lr:g}": relearn_steps(net, xt[few], yt[few], x[ft], y[ft], lr=lr)
                            for lr in (1e-3, 1e-4)}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for size in (1, 2):
        sub = [r for r in rows if len(r["forget"]) == size]
        for name in [k for k in rows[0] if isinstance(rows[0][k], dict) and k != "repair_seconds"]:
            have = [r[name] for r in sub if name in r]
            if have:
                summary[f"size{size} {name}"] = {k: statistics.median(h[k] for h in have) for k in have[0]} | {
                    "sets": len(have)}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
