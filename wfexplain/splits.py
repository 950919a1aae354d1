"""The data a checkpoint was made with, rebuilt from its manifest: its splits, preprocessed as its network
expects, the training images its backbone saw (``--limit-train``) and its validation split.

The validation split is a seeded, class-stratified hold-out of the training split (``train`` holds
out :data:`VAL_FRACTION` by default), recorded in the manifest with a digest of its indices so a
later run can check it gets the same images. Every hyperparameter choice is made on it, never on
the test split. This module is the one place these subsets are derived.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Subset

from .data import indices_digest, load_dataset, stratified_subset, validation_split, with_preprocessing
from .manifest import CheckpointError, Manifest

VAL_FRACTION = 0.1  # share of the training split `train` holds out for validation (0 disables)


def checkpoint_split(manifest: Manifest, split: str, data_dir: str | os.PathLike | None = None,
                     download: bool = False):
    """A split of the checkpoint's dataset, preprocessed as its network expects.

    The directory is ``data_dir`` if given, else the one the checkpoint recorded, else the
    dataset's default; size, channels, mean and std are the checkpoint's own, whatever the
    dataset's defaults.
    """
    info = manifest.dataset
    root = data_dir or manifest.data_dir
    chans = info.in_chans if info.name == "imagefolder" else None
    return with_preprocessing(load_dataset(info.name, split, root, download, info.img_size, chans), info)


class _LabelledSubset(Subset):
    """A :class:`~torch.utils.data.Subset` that keeps its samples' labels as ``targets``, like the full split."""

    targets: torch.Tensor


def _subset(ds, idx: torch.Tensor) -> _LabelledSubset:
    sub = _LabelledSubset(ds, idx.tolist())
    sub.targets = ds.targets[idx]
    return sub


def training_subset(ds, limit: int | None, seed: int):
    """The seeded, class-stratified subset of ``limit`` training images (all if None), with its ``targets``."""
    if limit is None or limit >= len(ds):
        return ds
    return _subset(ds, stratified_subset(ds.targets, limit, seed))


def hold_out(train, images: int, seed: int, seen_by_backbone: bool) -> tuple[_LabelledSubset, _LabelledSubset, dict]:
    """``(rest, validation, record)``: a seeded, stratified validation split carved from ``train``.

    ``record`` is what the manifest stores (``validation``): the size, seed, a digest of the chosen
    indices and whether the backbone was trained on these images (a checkpoint made before
    validation splits existed, or imported, gets its split at unlearning time: seen, but never
    used to train the memory or to choose its settings).
    """
    rest, val = validation_split(train.targets, images, seed)
    record = {"images": images, "seed": seed, "sha256": indices_digest(val), "seen_by_backbone": seen_by_backbone}
    return _subset(train, rest), _subset(train, val), record


def recorded_split(manifest: Manifest, train) -> tuple:
    """``(rest, validation)`` of ``train`` as the manifest recorded them; ``(train, None)`` when it records none.

    Raises:
        CheckpointError: the training split no longer yields the recorded validation images.
    """
    v = manifest.validation
    if v is None:
        return train, None
    if v["images"] >= len(train):
        raise CheckpointError(f"the checkpoint holds out {v['images']} validation images, but its training split "
                              f"has only {len(train)}: is this the dataset it was trained on?")
    rest, val, record = hold_out(train, v["images"], v["seed"], v["seen_by_backbone"])
    if record["sha256"] != v["sha256"]:
        raise CheckpointError(f"the training split no longer yields the checkpoint's validation images (digest "
                              f"{record['sha256']}, recorded {v['sha256']}): is this the dataset it was trained on?")
    return rest, val


def checkpoint_train_split(manifest: Manifest, data_dir: str | os.PathLike | None = None):
    """The training images the checkpoint's backbone was trained on (validation and --limit-train applied)."""
    train = checkpoint_split(manifest, "train", data_dir)
    rest, _ = recorded_split(manifest, train)
    if manifest.validation is not None and not manifest.validation["seen_by_backbone"]:
        train = rest
    return training_subset(train, manifest.train_images, (manifest.train_config or {}).get("seed", 0))


def checkpoint_validation_split(manifest: Manifest, data_dir: str | os.PathLike | None = None):
    """The checkpoint's validation images (None when it records none)."""
    return recorded_split(manifest, checkpoint_split(manifest, "train", data_dir))[1]
