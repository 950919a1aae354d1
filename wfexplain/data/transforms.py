"""The preprocessing a model carries: resize (whole, or shorter side then centre crop), channels, normalisation.

A :class:`~wfexplain.data.DatasetInfo` records the input size ``(H, W)``, the resampling filter
(``interpolation``, one of :data:`INTERPOLATIONS`) and ``crop_pct``. With ``crop_pct`` None the whole
image is resized to ``(H, W)`` (aspect not kept); otherwise, as timm's eval transform
(``transforms_imagenet_eval``, crop mode "center") and torchvision's ``ImageClassification`` do, the image
is resized keeping its aspect (a square input: the shorter side to ``floor(H / crop_pct)``; ``(H, W)``:
the smaller scale that covers ``floor(H / crop_pct) x floor(W / crop_pct)``) and its centre cropped to
``(H, W)``. PIL images go through torchvision's transforms (:func:`build_transform`: identical tensors to
timm's and torchvision's own); in-memory datasets are resized in batches by :func:`resize_batch` (torch,
antialiased: equal to PIL up to rounding) for ``bilinear`` and ``nearest``, else image by image with PIL (torch's
bicubic kernel is not PIL's).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from PIL import Image

from .info import DatasetInfo

TENSOR_MODES = {"bilinear": "bilinear", "nearest": "nearest-exact"}  # torch's equal of PIL's (torch's bicubic is not)


def resized_hw(h: int, w: int, info: DatasetInfo) -> tuple[int, int]:
    """The size an ``h x w`` image is resized to before the centre crop (``info.crop_pct`` set)."""
    H, W = info.input_hw
    pct = info.crop_pct or 1.0
    if H == W:  # torchvision's Resize(int): the shorter side to s, the longer truncated
        s = math.floor(H / pct)
        return (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
    th, tw = math.floor(H / pct), math.floor(W / pct)  # timm's ResizeKeepRatio (longest=0)
    ratio = min(h / th, w / tw)
    return round(h / ratio), round(w / ratio)


class Preprocess:
    """:func:`build_transform`'s callable: torchvision's ``Compose``, built (torchvision imported) on first call.

    Every model carries one; building it eagerly would import torchvision (and torch._dynamo, sympy)
    whenever a checkpoint loads, although most models never preprocess a PIL image.
    """

    def __init__(self, info: DatasetInfo):
        self.info = info
        self._compose: Callable[[Image.Image], torch.Tensor] | None = None

    @property
    def compose(self) -> Callable[[Image.Image], torch.Tensor]:
        """The torchvision ``Compose`` itself."""
        if self._compose is None:
            self._compose = _compose(self.info)
        return self._compose

    def __call__(self, im: Image.Image) -> torch.Tensor:
        return self.compose(im)

    def __repr__(self) -> str:
        h, w = self.info.input_hw
        extra = "" if self.info.crop_pct is None else f", crop_pct={self.info.crop_pct:g}"
        return f"Preprocess({h}x{w}, in_chans={self.info.in_chans}, {self.info.interpolation}{extra})"


def build_transform(info: DatasetInfo) -> Preprocess:
    """PIL image (any mode, any size) -> normalised input tensor ``[C, H, W]``."""
    return Preprocess(info)


class _ToMode:
    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, im: Image.Image) -> Image.Image:
        return to_mode(im, self.mode)


class _KeepRatio:
    """timm's ``ResizeKeepRatio`` for a non-square input: the image scaled to cover the pre-crop size."""

    def __init__(self, info: DatasetInfo, interpolation):
        self.info, self.interpolation = info, interpolation

    def __call__(self, im: Image.Image) -> Image.Image:
        from torchvision.transforms import functional

        return functional.resize(im, list(resized_hw(im.height, im.width, self.info)), self.interpolation)


def _compose(info: DatasetInfo) -> Callable[[Image.Image], torch.Tensor]:
    from torchvision import transforms

    mode = "L" if info.in_chans == 1 else "RGB"
    interpolation = transforms.InterpolationMode(info.interpolation)
    h, w = info.input_hw
    if info.crop_pct is None:
        resize: list = [transforms.Resize((h, w), interpolation=interpolation)]
    elif h == w:
        resize = [transforms.Resize(math.floor(h / info.crop_pct), interpolation=interpolation), transforms.CenterCrop(h)]
    else:
        resize = [_KeepRatio(info, interpolation), transforms.CenterCrop((h, w))]
    return transforms.Compose([_ToMode(mode), *resize, transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparency over black, the background of the bundled datasets.
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
    return im.convert(mode)


def resize_batch(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Images ``[N, C, h, w]`` in [0, 1] resized (and centre-cropped) as ``info`` says; ``TENSOR_MODES`` only.

    Untouched when nothing is to be done (same size, no crop): the built-in datasets at their own size.
    """
    h, w = x.shape[-2:]
    H, W = info.input_hw
    size = (H, W) if info.crop_pct is None else resized_hw(h, w, info)
    if (h, w) != size:
        mode = TENSOR_MODES[info.interpolation]
        smooth = mode != "nearest-exact"
        x = torch.nn.functional.interpolate(x, size=size, mode=mode, antialias=smooth,
                                            align_corners=False if smooth else None)
    if size != (H, W):  # torchvision's CenterCrop offsets
        top, left = round((size[0] - H) / 2.0), round((size[1] - W) / 2.0)
        x = x[..., top:top + H, left:left + W]
    return x
