"""What a model knows about its data: :class:`DatasetInfo`, its classes and preprocessing (checked when made)."""

from __future__ import annotations

import math
from dataclasses import dataclass

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")  # PIL's filters, as timm names them
MAX_RESIZE = 4096  # the largest side a crop_pct may ask to resize to, before cropping


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data."""

    name: str  # registry name, e.g. "fashion-mnist"
    class_names: tuple[str, ...]  # index -> human-readable name
    in_chans: int  # 1 (grayscale) or 3 (RGB)
    img_size: int  # input height in pixels (and width, unless img_width is given)
    mean: tuple[float, ...]  # per-channel normalisation mean
    std: tuple[float, ...]  # per-channel normalisation std
    interpolation: str = "bilinear"  # the resize's filter, one of INTERPOLATIONS
    crop_pct: float | None = None  # None: the whole image resized to the input; else shorter side, then centre crop
    img_width: int | None = None  # input width where it is not img_size (None: square; equal to img_size: None)

    def __post_init__(self):
        if self.img_width == self.img_size:
            object.__setattr__(self, "img_width", None)
        check_preprocessing(self)
        if self.crop_pct is not None:
            object.__setattr__(self, "crop_pct", float(self.crop_pct))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the network's input."""
        return self.img_size, self.img_width or self.img_size

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the network's input."""
        return self.in_chans, *self.input_hw


def check_preprocessing(info: DatasetInfo) -> None:
    """Raise ValueError for an ``interpolation``, ``crop_pct`` or ``img_width`` out of range."""
    if info.interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, found {info.interpolation!r}")
    w = info.img_width
    if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
        raise ValueError(f"img_width must be a positive integer or None, found {w!r}")
    p = info.crop_pct
    if p is None:
        return
    if not isinstance(p, int | float) or isinstance(p, bool) or not 0 < p <= 1:
        raise ValueError(f"crop_pct must be a number in (0, 1] or None, found {p!r}")
    if math.floor(max(info.input_hw) / p) > MAX_RESIZE:
        raise ValueError(f"crop_pct {p} resizes a {max(info.input_hw)} px input to more than {MAX_RESIZE} px")
