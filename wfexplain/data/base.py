"""What a model knows about its data, and the two kinds of dataset it reads.

:class:`DatasetInfo` is a model's classes and preprocessing; :class:`TensorImages` holds an
in-memory split (idx files, CIFAR-10), :class:`ImageFolderImages` streams image files through the
model's transform. :func:`with_preprocessing` feeds a split to a model with other preprocessing.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sized
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .info import DatasetInfo
from .transforms import TENSOR_MODES, build_transform, resize_batch

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGITS = tuple(str(i) for i in range(10))
IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


class DatasetError(FileNotFoundError):
    """A dataset is missing or unreadable; the message says what to provide."""


class _MissingFile(DatasetError):
    """A needed file is absent (rather than present but unreadable)."""


class MixedModesWarning(UserWarning):
    """An image folder mixes grayscale and colour files; the majority decides the channels."""


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
        if self.info.interpolation not in TENSOR_MODES:  # PIL's own filter (bicubic, box, ...), image by image
            transform = build_transform(self.info)
            return torch.stack([transform(self.pil(int(i))) for i in idx])
        x = self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] != self.info.in_chans:  # another model's preprocessing (with_preprocessing)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        return (resize_batch(x, self.info) - self._mean) / self._std

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



def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS) if folder.is_dir() else []


def _data_root(root: str | os.PathLike | None, default: str | None) -> Path | None:
    root = root or os.environ.get("WFEXPLAIN_DATA")
    return Path(root) if root else (Path(default) if default else None)



_LUMA = torch.tensor([0.299, 0.587, 0.114])  # PIL's RGB -> L weights


def dataset_len(ds: Dataset) -> int:
    """``len(ds)`` of a map-style dataset (torch's ``Dataset`` type does not declare ``__len__``)."""
    return len(cast(Sized, ds))


def with_preprocessing(ds: TensorImages | ImageFolderImages, info: DatasetInfo) -> TensorImages | ImageFolderImages:
    """``ds`` (from :func:`load_dataset`) as a model with ``info`` sees it: its size, channels, mean and std.

    Image folders go through the model's own transform (resize or resize and crop, mode, normalisation);
    in-memory datasets are resized likewise in batches (:func:`~wfexplain.data.transforms.resize_batch`:
    torch, antialiased) and converted between gray and RGB (PIL's weights).

    Raises:
        DatasetError: the dataset's classes are not the model's.
    """
    if tuple(ds.info.class_names) != tuple(info.class_names):
        raise DatasetError(f"the dataset's classes {list(ds.info.class_names)[:5]}... are not the model's "
                           f"{list(info.class_names)[:5]}...")
    out = copy.copy(ds)
    out.info = info
    if isinstance(out, ImageFolderImages):  # a copy: the same class as ds
        out.transform = build_transform(info)
    else:
        out._mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        out._std = torch.tensor(info.std).view(1, -1, 1, 1)
    return out
