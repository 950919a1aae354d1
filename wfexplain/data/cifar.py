"""CIFAR-10 in torchvision's on-disk layout, read by our own checked reader.

The batches are Python pickles: they are unpickled with an allow-list of numpy arrays and plain
containers, so a file holding anything else is refused unrun. The layout and each file's contents
are verified instead of torchvision's md5 table; torchvision is used only for ``--download``.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetInfo, _data_root

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_FILES = (*_CIFAR10_TRAIN_FILES, "test_batch", "batches.meta")
_CIFAR10_LAYOUT = f"<dir>/{_CIFAR10_DIR}/{{data_batch_1..5, test_batch, batches.meta}}"


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (it could run code)."""


def _pickle_allow_list() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2 (importing numpy.core there only to resolve names would warn)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]  # same names, older location
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol 0-2 pickles written by Python 3
    }
    for pkg in ("numpy.core", "numpy._core"):  # the real archive says numpy.core; numpy 2 writes numpy._core
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct  # ndarray, protocol <= 4
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar  # a numpy scalar, e.g. a np.int64 label
        # ndarray, protocol 5 (numpy's stubs omit this private function)
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; every other global is refused before it is imported."""

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if _ArrayUnpickler._allowed is None:
            _ArrayUnpickler._allowed = _pickle_allow_list()
        try:
            return _ArrayUnpickler._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _RefusedGlobal(f"persistent id {pid!r}")


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()  # bytes keys, as the original CIFAR loader
    except _RefusedGlobal as e:
        raise DatasetError(f"{path}: holds objects other than numpy arrays and lists (it asks for {e}); refused: a CIFAR-10 "
                           "batch is a pickled dict of arrays and lists, and unpickling other objects can run code") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    except Exception as e:  # truncated or corrupt pickle: EOFError, UnpicklingError, ValueError, ...
        raise DatasetError(f"cannot read {path}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: holds a {type(obj).__name__}, expected a dict (torchvision's CIFAR-10 layout)")
    return obj


def _cifar_key(d: dict, path: Path, *names: str):
    """The value of the first of ``names`` present as a bytes (Python 2 pickles) or str key."""
    for name in names:
        for key in (name.encode(), name):
            if key in d:
                return name, d[key]
    keys = ", ".join(sorted(repr(k) for k in d)) or "none"
    raise DatasetError(f"{path}: no {' or '.join(repr(n.encode()) for n in names)} key (keys: {keys})")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    batch = _read_cifar_pickle(path)
    _, data = _cifar_key(batch, path, "data")
    if not isinstance(data, np.ndarray | list | tuple):
        raise DatasetError(f"{path}: b'data' is a {type(data).__name__}, expected a uint8 array of shape (N, 3072)")
    try:
        arr = np.asarray(data)
    except ValueError as e:  # a ragged list
        raise DatasetError(f"{path}: b'data' is not a rectangular array ({e}); expected (N, 3072)") from None
    if arr.ndim != 2 or arr.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' has shape {arr.shape}, expected (N, 3072)")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu":
            raise DatasetError(f"{path}: b'data' has dtype {arr.dtype}, expected uint8 pixel values")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DatasetError(f"{path}: b'data' has values {arr.min()}..{arr.max()}, expected uint8 pixel values 0..255")
        arr = arr.astype(np.uint8)
    key, labels = _cifar_key(batch, path, "labels", "fine_labels")
    if isinstance(labels, np.ndarray) and labels.ndim == 1:
        labels = labels.tolist()
    if not isinstance(labels, list | tuple):
        raise DatasetError(f"{path}: b'{key}' is a {type(labels).__name__}, expected a list of ints")
    labels = [v.item() if isinstance(v, np.generic) else v for v in labels]
    for i, v in enumerate(labels):
        if not isinstance(v, int) or isinstance(v, bool):
            raise DatasetError(f"{path}: b'{key}'[{i}] is {v!r} ({type(v).__name__}), expected an int in 0..9")
    bad = [i for i, v in enumerate(labels) if not 0 <= v <= 9]
    if bad:
        raise DatasetError(f"{path}: {len(bad)} of {len(labels)} labels out of range 0..9 in b'{key}' "
                           f"(first: {labels[bad[0]]} at index {bad[0]})")
    if len(labels) != len(arr):
        raise DatasetError(f"{path}: b'data' has {len(arr)} rows but b'{key}' has {len(labels)} labels")
    return arr, labels


def _read_cifar_meta(path: Path) -> tuple[str, ...]:
    _, names = _cifar_key(_read_cifar_pickle(path), path, "label_names")
    if not isinstance(names, list | tuple) or not all(isinstance(n, str | bytes) for n in names):
        raise DatasetError(f"{path}: b'label_names' is {type(names).__name__} {names!r:.80}, expected a list of 10 class names")
    if len(names) != 10:
        raise DatasetError(f"{path}: b'label_names' has {len(names)} class names, expected 10")
    return tuple(n.decode("utf-8", errors="replace") if isinstance(n, bytes) else n for n in names)


def _cifar10_folder(root: Path) -> Path:
    """``root/cifar-10-batches-py`` when present, else ``root`` itself when it is (or looks like) that folder."""
    sub = root / _CIFAR10_DIR
    if sub.is_dir():
        return sub
    if root.name == _CIFAR10_DIR or any((root / name).is_file() for name in _CIFAR10_FILES):
        return root
    return sub


def _cifar10_missing(folder: Path) -> list[str]:
    if not folder.is_dir():
        return [f"{folder}/"]
    return [str(folder / name) for name in _CIFAR10_FILES if not (folder / name).is_file()]


def _load_cifar10(root, split, download):
    root = _data_root(root, None)
    if root is None:
        raise DatasetError("CIFAR-10 needs --data-dir (or WFEXPLAIN_DATA) pointing at a folder with cifar-10-batches-py/")
    folder = _cifar10_folder(root)
    if download and _cifar10_missing(folder):  # torchvision only to fetch (it checks its md5s); never to read
        from torchvision.datasets import CIFAR10

        target = folder.parent if folder.name == _CIFAR10_DIR else root
        try:
            CIFAR10(str(target), train=split == "train", download=True)
        except (RuntimeError, OSError) as e:
            raise DatasetError(f"CIFAR-10 download into {target} failed ({type(e).__name__}: {e})") from None
        folder = _cifar10_folder(root)
    missing = _cifar10_missing(folder)
    if missing:
        raise DatasetError(f"CIFAR-10 not found under {root}: missing {', '.join(missing)}; expected torchvision's layout "
                           f"{_CIFAR10_LAYOUT} (--data-dir may be <dir> or the {_CIFAR10_DIR} folder itself); "
                           "pass --download to fetch it explicitly")
    class_names = _read_cifar_meta(folder / "batches.meta")
    names = _CIFAR10_TRAIN_FILES if split == "train" else ("test_batch",)
    batches = [_read_cifar_batch(folder / name) for name in names]
    data = np.concatenate([b[0] for b in batches])
    labels = np.asarray([y for b in batches for y in b[1]], dtype=np.int64)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R, G, B planes -> HWC, as torchvision's .data
    info = DatasetInfo("cifar10", class_names, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    return images, labels, info
