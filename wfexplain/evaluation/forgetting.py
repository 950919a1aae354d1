"""Forget matrix and forget/retain accuracy of every single class and every pair.

For a forget set S (Poppi et al., arXiv 2304.02049; docs/benchmark.md): *forget accuracy* is the accuracy on test images of
classes in S with filter S (lower is better); *retain accuracy* the accuracy on test
images of the other classes with filter S (higher is better), compared with the original
(unfiltered) model on the same images. Row c of the forget matrix is filter {c}; column
k the accuracy on test class k.

Under torchrun each rank predicts a contiguous shard of the images and the predictions are
gathered (:mod:`wfexplain.distributed`), so every rank reports the single-process numbers.
"""

from __future__ import annotations

import itertools
import time

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .. import distributed as dist
from ..data import stratified_subset
from ..data.base import dataset_len
from ..engine import Progress
from ..filtering import FilteredModel, Forget, bake
from .metrics import accuracy, forget_accuracy, per_class_accuracy, retain_accuracy


@torch.no_grad()
def predict(model: FilteredModel, ds: Dataset, forget: Forget = None, batch_size: int = 500,
            hard_threshold: float | None = None, workers: int = 0) -> torch.Tensor:
    """Predicted labels (on the CPU) of every sample of ``ds`` under one forget set.

    With ``hard_threshold`` the filter is hard-baked into a plain copy of the backbone
    (:func:`wfexplain.filtering.bake`), i.e. what a user would ship. Runs on the model's
    device with ``workers`` loading processes.
    """
    net = model if hard_threshold is None or forget is None else bake(model, forget, hard_threshold)
    kwargs = {} if net is not model else {"forget": forget}
    device = next(model.parameters()).device
    part = Subset(ds, list(dist.shard(dataset_len(ds)))) if dist.world_size() > 1 else ds
    loader = DataLoader(part, batch_size=batch_size, num_workers=workers)
    preds = [net(x.to(device), **kwargs).argmax(1).cpu() for x, _ in loader]
    local = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return dist.gather_shards(local, dataset_len(ds))


def dataset_targets(ds: Dataset, num_classes: int) -> torch.Tensor:
    """The labels of a map-style dataset: its ``targets`` (tensor or list) or, failing that, each ``ds[i][1]``."""
    n = dataset_len(ds)
    t = getattr(ds, "targets", None)
    y = torch.as_tensor(t, dtype=torch.long) if t is not None else torch.tensor([int(ds[i][1]) for i in range(n)])
    if len(y) != n or (len(y) and not (int(y.min()) >= 0 and int(y.max()) < num_classes)):
        raise ValueError(f"the dataset's labels must be {n} class indices in 0..{num_classes - 1}")
    return y


def _summary(results: list[dict]) -> dict:
    fa = [r["forget"] for r in results]
    return {
        "forget_accuracy_mean": sum(fa) / len(fa),
        "forget_accuracy_max": max(fa),
        "retain_accuracy_mean": sum(r["retain"] for r in results) / len(results),
        "original_retain_accuracy_mean": sum(r["original_retain"] for r in results) / len(results),
    }


def evaluate(model: FilteredModel, test: Dataset, limit: int | None = None, pairs: bool = False,
             seed: int = 0, progress: Progress | None = None, hard_threshold: float | None = None,
             workers: int = 0) -> dict:
    """Evaluate every single-class filter (and every pair with ``pairs=True``).

    Args:
        model: the filtered model.
        test: the test split.
        limit: evaluate a seeded class-stratified subset of this many images.
        pairs: also evaluate all N(N-1)/2 pairs of classes.
        seed: seed of the subset.
        progress: callback ``(done, total, {})``.
        hard_threshold: evaluate hard-baked models (gates below it zeroed) instead of gates.
        workers: data-loading processes.

    Returns:
        The JSON-ready report described in the README (accuracies as fractions).
    """
    start = time.perf_counter()
    model.eval()
    n = model.num_classes
    targets = dataset_targets(test, n)
    idx = stratified_subset(targets, limit, seed)
    ds = Subset(test, idx.tolist())
    y = targets[idx]
    sets = [(c,) for c in range(n)] + (list(itertools.combinations(range(n), 2)) if pairs else [])
    total, done = len(sets) + 1, 0

    def tick():
        nonlocal done
        done += 1
        if progress:
            progress(done, total, {})

    original = predict(model, ds, workers=workers)
    tick()
    per_set = {}
    for s in sets:
        p = predict(model, ds, forget=list(s), hard_threshold=hard_threshold, workers=workers)
        per_set[s] = {
            "forget": forget_accuracy(p, y, s),
            "retain": retain_accuracy(p, y, s),
            "original_retain": retain_accuracy(original, y, s),
            "per_class": per_class_accuracy(p, y, n),
        }
        tick()
    report = {
        "num_images": len(idx),
        "original_accuracy": accuracy(original, y),
        "original_per_class": per_class_accuracy(original, y, n),
        "forget_matrix": [per_set[(c,)]["per_class"] for c in range(n)],
        "single": _summary([per_set[(c,)] for c in range(n)]),
    }
    if pairs:
        report["pairs"] = _summary([per_set[s] for s in sets[n:]])
    if hard_threshold is not None:
        report["hard_threshold"] = hard_threshold
    report["seconds"] = time.perf_counter() - start
    return report
