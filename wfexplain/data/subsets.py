"""Seeded, class-stratified subsets and content fingerprints of dataset splits."""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import DataLoader, Subset

from .base import ImageFolderImages, TensorImages


def fingerprint(ds: TensorImages | ImageFolderImages) -> str:
    """A short content hash of a dataset split (labels and, where cheap, pixels)."""
    h = hashlib.sha256()
    h.update(ds.targets.numpy().tobytes())
    if isinstance(ds, TensorImages):
        h.update(ds.images.numpy().tobytes())
    else:
        for path, _ in ds.samples:
            h.update(str(path.relative_to(path.parent.parent)).encode())
    return h.hexdigest()[:16]


def stratified_subset(targets: torch.Tensor, limit: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded, class-stratified subset of ``limit`` samples (all if None)."""
    n = len(targets)
    if limit is None or limit >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    classes = targets.unique()
    per_class = [torch.nonzero(targets == c).flatten() for c in classes]
    counts = torch.tensor([len(p) for p in per_class], dtype=torch.float)
    quota = counts / n * limit
    if limit < len(classes):  # cannot cover every class: one each from the largest
        take = torch.zeros(len(classes), dtype=torch.long)
        take[torch.argsort(counts, descending=True)[:limit]] = 1
    else:  # proportional, at least one per class, then exact total by largest deviation
        take = quota.floor().long().clamp(min=1)
        while take.sum() > limit:
            over = torch.where(take > 1, take - quota, torch.tensor(-float("inf")))
            take[over.argmax()] -= 1
        while take.sum() < limit:
            under = torch.where(take < counts, quota - take, torch.tensor(-float("inf")))
            take[under.argmax()] += 1
    chosen = [p[torch.randperm(len(p), generator=g)[: int(k)]] for p, k in zip(per_class, take, strict=True)]
    return torch.cat(chosen).sort().values


def validation_split(targets: torch.Tensor, images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rest, validation)`` indices: a seeded, class-stratified hold-out of ``images`` samples, and the others.

    The validation images are drawn with :func:`stratified_subset` from a seed stream apart from the
    training subset's (``seed + 7919``), so ``--limit-train`` never picks the same images by design.
    """
    if not 0 < images < len(targets):
        raise ValueError(f"a validation split needs 1..{len(targets) - 1} images, got {images}")
    val = stratified_subset(targets, images, seed + 7919)
    keep = torch.ones(len(targets), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val


def indices_digest(idx: torch.Tensor) -> str:
    """A short SHA-256 of a sorted index set (records which images a split holds)."""
    return hashlib.sha256(idx.sort().values.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def subset_tensors(ds: TensorImages | ImageFolderImages, limit: int | None,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The evaluation subset, preprocessed once: ``(inputs [N, C, H, W], labels [N], indices into ds)``.

    The one place a split is turned into a seeded, class-stratified batch of model inputs (the
    dashboard's live views and the benchmark's probe both use it).
    """
    idx = stratified_subset(ds.targets, limit, seed)
    x, _ = next(iter(DataLoader(Subset(ds, idx.tolist()), batch_size=len(idx))))
    return x, ds.targets[idx], idx
