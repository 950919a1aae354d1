"""Does pruning make a hard bake resist relearning? A study (issue 14, item 5), not a library feature.

    .venv/bin/python scripts/relearn_study.py [--checkpoint checkpoints/fmnist-cnn] [--json runs/relearn.json]

Weight filtering (Poppi et al., arXiv 2304.02049) *suppresses* a class: a soft bake scales weights, a
hard bake (:func:`wfexplain.bake` with ``hard_threshold``) zeroes the components whose gate is below
the threshold. A zeroed BatchNorm channel or head still has consumers downstream, so its affine
gets a gradient again at the first fine-tuning step. The *pruned* hard bake (:func:`removal_masks`)
also zeroes every weight that only those components feed — found generically, as the weights whose
gradient on a probe batch is exactly zero once the components are off but not before — so that
each switched-off component and its consumers sit at a stationary point of gradient-based
fine-tuning (zero input, zero output: Adam's update is exactly zero). Relearning can then only go
through the components that stay on. The *repaired* pruned bake (:func:`repair`) then fine-tunes
the rest of the network on retain training images only, the removed weights held at zero, as the
"prune, then repair" removal the issue proposed.

This script measures relearn time (Golatkar et al., CVPR 2020; see
:func:`wfexplain.evaluation.metrics.relearn_steps`: Adam steps on 32 training images of the forgotten
classes until half of their test images are recognised again; higher = harder to relearn) of the
soft bake, the hard bake and the pruned hard bake, at two learning rates, for every single class
(against the stored Retrain oracles, where the checkpoint has them: ``wfexplain retrain --forget 0 1``
trains one for a pair) and every pair, with the retain accuracy each costs on the test subset.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch
from torch import nn

import wfexplain
from wfexplain.data import subset_tensors
from wfexplain.evaluation.metrics import in_set, relearn_steps, retain_accuracy
from wfexplain.filtering import FilteredModel, Forget, bake
from wfexplain.pipeline import oracle_path
from wfexplain.splits import checkpoint_split


def _grads(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    params = dict(net.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    with torch.enable_grad():
        net(x).pow(2).sum().backward()
    return {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone() for k, p in params.items()}


def removal_masks(model: FilteredModel, forget: Forget, threshold: float, probe: torch.Tensor) -> tuple[nn.Module, dict]:
    """``(hard-baked copy with the removed weights zeroed, {parameter name: bool mask of removed entries})``."""
    net = bake(model, forget, hard_threshold=threshold).eval()
    plain = bake(model, None).eval()  # the same network with every component on
    before, after = _grads(plain, probe), _grads(net, probe)
    masks = {}
    with torch.no_grad():
        for name, p in net.named_parameters():
            dead = (after[name] == 0) & (before[name] != 0)  # fed only by switched-off components
            masks[name] = dead | ((p == 0) & (dict(plain.named_parameters())[name] != 0))  # and what the bake zeroed
            p.masked_fill_(masks[name], 0.0)
            p.grad = None
    return net, masks


def repair(net: nn.Module, masks: dict, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    """Adam on retain images (batches of 64, BatchNorm frozen), the removed weights put back to zero after each step."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    params = dict(net.named_parameters())
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=g)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].masked_fill_(m, 0.0)
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/fmnist-cnn")
    ap.add_argument("--threshold", type=float, default=0.5, help="hard-bake threshold")
    ap.add_argument("--limit", type=int, default=2000, help="test images (retain accuracy, relearn evaluation)")
    ap.add_argument("--repair-steps", type=int, default=100, help="retain-only fine-tuning steps of the repaired bake")
    ap.add_argument("--repair-lr", type=float, default=1e-4)
    ap.add_argument("--pairs", type=int, default=45, help="how many pairs (in order {0,1}, {0,2}, ...) to study")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = wfexplain.load(args.checkpoint)
    x, y, _ = subset_tensors(checkpoint_split(model.manifest, "test"), args.limit)
    xt, yt, _ = subset_tensors(checkpoint_split(model.manifest, "train"), 5000, seed=1)
    n = model.num_classes
    rows = []
    pairs = list(itertools.combinations(range(n), 2))[:args.pairs]
    for forget in [*((c,) for c in range(n)), *pairs]:
        fm, ft = in_set(yt, forget), in_set(y, forget)
        few = torch.nonzero(fm).flatten()[torch.randperm(int(fm.sum()), generator=torch.Generator().manual_seed(0))[:32]]
        nets = {"original": bake(model, None), "soft bake": bake(model, list(forget)),
                "hard bake": bake(model, list(forget), args.threshold)}
        nets["pruned hard bake"], masks = removal_masks(model, list(forget), args.threshold, xt[:16])
        pruned, _ = removal_masks(model, list(forget), args.threshold, xt[:16])
        nets["repaired pruned bake"] = repair(pruned, masks, xt[~fm], yt[~fm], args.repair_steps, args.repair_lr)
        oracle = oracle_path(args.checkpoint, forget, 0)
        if (oracle / "manifest.json").is_file():
            nets["Retrain"] = wfexplain.load(oracle).backbone
        row = {"forget": list(forget), "removed_weights": int(sum(int(m.sum()) for m in masks.values()))}
        for name, net in nets.items():
            with torch.no_grad():
                pred = torch.cat([net(b).argmax(1) for b in x.split(500)])
            row[name] = {"retain": retain_accuracy(pred, y, forget), **{
                f"relearn_lr{lr:g}": relearn_steps(net, xt[few], yt[few], x[ft], y[ft], lr=lr) for lr in (1e-3, 1e-4)}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for size in (1, 2):
        sub = [r for r in rows if len(r["forget"]) == size]
        for name in ("original", "soft bake", "hard bake", "pruned hard bake", "repaired pruned bake", "Retrain"):
            have = [r[name] for r in sub if name in r]
            if have:
                summary[f"size{size} {name}"] = {k: statistics.median(h[k] for h in have) for k in have[0]} | {
                    "sets": len(have)}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
