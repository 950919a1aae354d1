"""Forget matrix and forget/retain accuracy of every single class, every pair and seeded larger sets.

For a forget set S (Poppi et al., arXiv 2304.02049; docs/benchmark.md): *forget accuracy* is the accuracy on test images of
classes in S with filter S (lower is better); *retain accuracy* the accuracy on test
images of the other classes with filter S (higher is better), compared with the original
(unfiltered) model on the same images. Row c of the forget matrix is filter {c}; column
k the accuracy on test class k. Sets of three or more classes are a seeded sample
(:func:`forget_sets`); each size is summarised by the mean and max forget accuracy, the mean
retain accuracy (and the original's) and its worst set.

Under torchrun each rank predicts a contiguous shard of the images and the predictions are
gathered (:mod:`wfexplain.distributed`), so every rank reports the single-process numbers.
"""

from __future__ import annotations

import itertools
import math
import numbers
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .. import distributed as dist
from ..data import stratified_subset
from ..data.base import dataset_len
from ..engine import Progress
from ..filtering import FilteredModel, Forget, bake
from ..inference import Predictor
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


IN_MEMORY_VALUES = 2**28  # evaluation inputs up to this many floats (1 GiB) are loaded once for the fast path


def _set_predictions(model: FilteredModel, ds: Dataset, hard_threshold: float | None,
                     workers: int) -> tuple[Callable[[list[int] | None], torch.Tensor], str]:
    """``(forget set -> predicted labels, what runs)``: :class:`~wfexplain.inference.Predictor` on the inputs
    loaded once when they fit in memory on one process, else :func:`predict` streaming them per set."""
    n = dataset_len(ds)
    first = ds[0][0] if n else None
    if dist.world_size() > 1 or first is None or n * first.numel() > IN_MEMORY_VALUES:
        def stream(forget: list[int] | None) -> torch.Tensor:
            return predict(model, ds, forget=forget, hard_threshold=hard_threshold if forget else None, workers=workers)
        return stream, "hooks, streamed"
    x = torch.cat([b for b, _ in DataLoader(ds, batch_size=500, num_workers=workers)])
    predictor = Predictor(model, x)

    def fast(forget: list[int] | None) -> torch.Tensor:
        return predictor.logits(forget, hard_threshold if forget else None).argmax(1).cpu()
    return fast, predictor.describe()


def _summary(results: list[dict]) -> dict:
    fa = [r["forget"] for r in results]
    return {
        "forget_accuracy_mean": sum(fa) / len(fa),
        "forget_accuracy_max": max(fa),
        "retain_accuracy_mean": sum(r["retain"] for r in results) / len(results),
        "original_retain_accuracy_mean": sum(r["original_retain"] for r in results) / len(results),
    }


def forget_sets(num_classes: int, size: int, samples: int = 20, seed: int = 0) -> tuple[list[tuple[int, ...]], bool]:
    """The forget sets of ``size`` classes evaluated, and whether they are a sample.

    Sizes 1 and 2: every set. Larger sizes: ``samples`` distinct sorted sets drawn with a
    ``torch.Generator`` seeded with ``seed + size`` (the same on every call and process), or every
    set when there are at most ``samples`` of them. Sets are listed in increasing order.
    """
    if not 1 <= size <= num_classes:
        raise ValueError(f"set sizes must be in 1..{num_classes} (the number of classes), got {size}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if size <= 2 or math.comb(num_classes, size) <= samples:
        return list(itertools.combinations(range(num_classes), size)), False
    g = torch.Generator().manual_seed(seed + size)
    drawn: set[tuple[int, ...]] = set()
    while len(drawn) < samples:
        drawn.add(tuple(sorted(torch.randperm(num_classes, generator=g)[:size].tolist())))
    return sorted(drawn), True


def _sizes(num_classes: int, sets: Sequence[int] | None, pairs: bool) -> list[int]:
    """The set sizes :func:`evaluate` measures: 1, those of ``sets`` (each in 1..N-1), and 2 with ``pairs``.

    ``pairs`` is not checked against N, as before ``sets`` existed: with two classes its one pair is both.
    """
    for k in sets if sets is not None else ():
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < num_classes:
            raise ValueError(f"set sizes must be integers in 1..{num_classes - 1} (below the {num_classes} "
                             f"classes), got {k!r}")
    return sorted({1, *(int(k) for k in sets or ()), *((2,) if pairs else ())})


def evaluate(model: FilteredModel, test: Dataset, limit: int | None = None, pairs: bool = False,
             seed: int = 0, progress: Progress | None = None, hard_threshold: float | None = None,
             workers: int = 0, sets: Sequence[int] | None = None, samples: int = 20) -> dict:
    """Evaluate every single-class filter, every pair (``pairs=True`` or 2 in ``sets``) and sampled larger sets.

    Args:
        model: the filtered model.
        test: the test split.
        limit: evaluate a seeded class-stratified subset of this many images.
        pairs: also evaluate all N(N-1)/2 pairs of classes.
        seed: seed of the subset, and (plus the size) of the sampled sets.
        progress: callback ``(done, total, {})``.
        hard_threshold: evaluate hard-baked models (gates below it zeroed) instead of gates.
        workers: data-loading processes.
        sets: set sizes, each in 1..N-1 (1 is always evaluated); default ``(1, 2) if pairs else (1,)``.
        samples: sets drawn per size of three or more (all of them when there are at most this many).

    Returns:
        The JSON-ready report of docs/formats.md (accuracies as fractions).
    """
    start = time.perf_counter()
    model.eval()
    n = model.num_classes
    sizes = _sizes(n, sets, pairs)
    drawn = {k: forget_sets(n, k, samples, seed) for k in sizes}
    targets = dataset_targets(test, n)
    idx = stratified_subset(targets, limit, seed)
    ds = Subset(test, idx.tolist())
    y = targets[idx]
    all_sets = [s for k in sizes for s in drawn[k][0]]
    total, done = len(all_sets) + 1, 0

    def tick():
        nonlocal done
        done += 1
        if progress:
            progress(done, total, {})

    run, path = _set_predictions(model, ds, hard_threshold, workers)
    original = run(None)
    tick()
    per_set: dict[tuple[int, ...], dict[str, Any]] = {}
    for s in all_sets:  # the one place a forget set is predicted and scored
        p = run(list(s))
        per_set[s] = {
            "forget": forget_accuracy(p, y, s),
            "retain": retain_accuracy(p, y, s),
            "original_retain": retain_accuracy(original, y, s),
            "per_class": per_class_accuracy(p, y, n),
        }
        tick()
    by_size = {}
    for k in sizes:
        members, sampled = drawn[k]
        worst = max(members, key=lambda s: per_set[s]["forget"])  # the first of equals
        entry = {**_summary([per_set[s] for s in members]), "count": len(members), "worst": list(worst),
                 "sampled": sampled}
        by_size[str(k)] = entry | ({"members": [list(s) for s in members]} if k >= 3 else {})
    report = {
        "num_images": len(idx),
        "original_accuracy": accuracy(original, y),
        "original_per_class": per_class_accuracy(original, y, n),
        "forget_matrix": [per_set[(c,)]["per_class"] for c in range(n)],
        "single": _summary([per_set[(c,)] for c in range(n)]),
    }
    if 2 in sizes:
        report["pairs"] = _summary([per_set[s] for s in drawn[2][0]])
    report["sets"] = by_size
    report["inference"] = path
    if hard_threshold is not None:
        report["hard_threshold"] = hard_threshold
    report["seconds"] = time.perf_counter() - start
    return report
