"""Image folders: ``train/`` and ``test/`` holding the same, non-empty class folders.

Channels are ``in_chans`` if given, else the majority mode over every file of train/ (from file
headers; mixed modes warn with :class:`~wfexplain.data.base.MixedModesWarning`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from .base import (
    GRAY_MODES,
    IMG_EXTENSIONS,
    DatasetError,
    DatasetInfo,
    ImageFolderImages,
    MixedModesWarning,
    _data_root,
    _image_files,
)


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
