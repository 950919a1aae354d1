"""build_transform: any PIL mode and any size becomes the model's input, normalised with the dataset's statistics."""

import numpy as np
import pytest
import torch
from PIL import Image

from wfexplain.data import DatasetInfo, build_transform

GRAY = DatasetInfo("g", ("a", "b"), 1, 28, (0.5,), (0.5,))
RGB = DatasetInfo("c", ("a", "b"), 3, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODES = ["RGB", "RGBA", "L", "P", "CMYK", "LA", "PA", "1", "I", "F", "I;16", "YCbCr", "HSV"]


def random_image(mode: str, size=(50, 17), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    rgba = Image.fromarray(rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8), "RGBA")
    if mode in ("I", "F", "I;16"):
        return Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8), "L").convert(mode)
    if mode == "P":
        return rgba.convert("RGB").convert("P", palette=Image.ADAPTIVE)
    return rgba.convert(mode)


@pytest.mark.parametrize("info", [GRAY, RGB], ids=["gray", "rgb"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(50, 17), (1, 1), (300, 200)], ids=["50x17", "1x1", "300x200"])
def test_build_transform_any_mode_any_size(info, mode, size):
    im = random_image(mode, size)
    assert im.mode == mode
    x = build_transform(info)(im)
    assert x.shape == (info.in_chans, info.img_size, info.img_size)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("info", [GRAY, RGB], ids=["gray", "rgb"])
def test_build_transform_transparent_becomes_black(info):
    t = build_transform(info)
    black = t(Image.new("RGB", (40, 30), (0, 0, 0)))
    # Fully transparent pixels, whatever colour they carry, composite over black.
    assert torch.equal(t(Image.new("RGBA", (40, 30), (255, 255, 255, 0))), black)
    assert torch.equal(t(Image.new("RGBA", (40, 30), (12, 200, 90, 0))), black)
    assert torch.equal(t(Image.new("LA", (40, 30), (255, 0))), black)
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.info["transparency"] = 1
    assert torch.equal(t(pal), black)
    # An opaque RGBA image is unchanged by compositing.
    opaque = Image.new("RGBA", (40, 30), (12, 200, 90, 255))
    assert torch.equal(t(opaque), t(opaque.convert("RGB")))


def test_build_transform_normalises_with_info_stats():
    x = build_transform(GRAY)(Image.new("L", (28, 28), 255))
    torch.testing.assert_close(x, torch.ones(1, 28, 28))  # (1 - 0.5) / 0.5
    x = build_transform(GRAY)(Image.new("L", (28, 28), 0))
    torch.testing.assert_close(x, -torch.ones(1, 28, 28))
