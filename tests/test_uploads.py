import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from wfexplain.data import build_transform
from wfexplain.explain.uploads import MAX_PIXELS, WORK_SIDE, UploadError, read_image

from .conftest import tiny_info


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(width: int = 4, height: int = 3) -> bytes:
    """A valid 16-bit grayscale PNG written by hand."""
    raw = b"".join(b"\x00" + b"\x12\x34" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def blank_rgba_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGBA PNG of transparent pixels, compressed row by row (never the whole image in memory)."""
    z, row, parts = zlib.compressobj(9), b"\x00" * (1 + 4 * width), []
    for _ in range(height):
        parts.append(z.compress(row))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "JPEG"),
                                           ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("LA", "PNG")])
def test_valid_images_become_model_inputs(mode, fmt):
    im = read_image(encode(RGB.convert(mode), fmt), f"x.{fmt.lower()}")
    for chans in (1, 3):
        x = build_transform(tiny_info(in_chans=chans))(im)
        assert x.shape == (chans, 16, 16) and x.isfinite().all()


def test_not_an_image():
    with pytest.raises(UploadError, match="not an image"):
        read_image(b"%PDF-1.4 hello", "doc.pdf")


def test_empty_file():
    with pytest.raises(UploadError, match="empty"):
        read_image(b"", "e.png")


def test_truncated_file():
    data = encode(RGB, "PNG")
    with pytest.raises(UploadError, match="truncated or corrupt"):
        read_image(data[: len(data) // 2], "cut.png")


def test_too_many_bytes():
    with pytest.raises(UploadError, match="limit is 10 MB"):
        read_image(b"\x89PNG" + b"0" * (10 * 1024 * 1024 + 1), "big.png")


def test_too_many_pixels():
    # 7000 x 6000 = 42 MP of a single colour compresses to a few kB.
    data = encode(Image.new("L", (7000, 6000)), "PNG")
    assert len(data) < 10 * 1024 * 1024
    with pytest.raises(UploadError, match="megapixels"):
        read_image(data, "huge.png")


def test_animated():
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(UploadError, match="animated"):
        read_image(buf.getvalue(), "anim.png")


def test_sixteen_bit():
    with pytest.raises(UploadError, match="16 bits"):
        read_image(png16(), "deep.png")


def test_unsupported_format():
    with pytest.raises(UploadError, match="supported formats"):
        read_image(encode(RGB, "TIFF"), "x.tiff")


def test_pixel_limit_is_read_from_the_header(monkeypatch):
    """6000x6000 RGBA is 0.1 MB as a PNG but 144 MB decoded: refused before any decode."""
    data = blank_rgba_png(6000, 6000)
    assert len(data) < 1024 * 1024 and Image.open(io.BytesIO(data)).size == (6000, 6000)

    def no_decode(self):
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    start = time.perf_counter()
    with pytest.raises(UploadError, match=r"6000x6000 = 36\.0 megapixels; the limit is 16\.8 megapixels \(e\.g\. 4096x4096\)"):
        read_image(data, "huge.png")
    assert time.perf_counter() - start < 1.0
    assert MAX_PIXELS == 4096 * 4096


@pytest.mark.parametrize(("mode", "fmt"), [("RGBA", "PNG"), ("P", "PNG"), ("RGB", "JPEG"), ("CMYK", "JPEG"),
                                           ("LA", "PNG"), ("RGB", "WEBP")])
def test_big_allowed_images_are_downscaled_in_their_own_mode(mode, fmt):
    im = Image.linear_gradient("L").resize((3000, 2000)).convert(mode)
    out = read_image(encode(im, fmt), f"big.{fmt.lower()}")
    assert out.mode == mode  # no conversion yet: the model's transform does it
    assert out.size == (WORK_SIDE, 683) and out.info["original_size"] == (3000, 2000)
    assert abs(out.width / out.height - 1.5) < 0.005
    if fmt == "JPEG":
        assert out.decoderconfig[0] == 2  # decoded at half scale (1500x1000), not at full size
    x = build_transform(tiny_info(in_chans=3))(out)
    assert x.shape == (3, 16, 16) and x.isfinite().all()


def test_small_images_keep_their_size():
    out = read_image(encode(RGB, "PNG"), "small.png")
    assert out.size == (30, 40) and out.info["original_size"] == (30, 40)


def test_out_of_domain_signals():
    import torch

    from wfexplain.explain.uploads import out_of_domain

    typical = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert out_of_domain(typical, 0.97) == []
    (unsure,) = out_of_domain(typical, 0.365)  # the dog photo: "Bag 36.5%"
    assert "unsure (top class at 36%" in unsure or "unsure (top class at 37%" in unsure
    saturated = torch.full((1, 3, 32, 32), 4.0)  # a flat, bright image far from the training statistics
    assert any("mean +4.00 and std 0.00" in r for r in out_of_domain(saturated, 0.9))


def test_preprocessing_text_names_mode_resize_and_both_statistics():
    from wfexplain.data import DatasetInfo
    from wfexplain.explain.uploads import preprocessing_text

    info = DatasetInfo("fashion-mnist", tuple("abcdefghij"), 1, 28, (0.286,), (0.353,))
    assert preprocessing_text(info, (640, 480)) == (
        "model input: grayscale, resized from 640x480 to 28x28 (aspect not kept), normalised (x − mean)/std with "
        "mean/std 0.286/0.353 per channel")
    rgb = DatasetInfo("cifar10", tuple("abcdefghij"), 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    assert "RGB, kept at 32x32" in preprocessing_text(rgb, (32, 32)) and "0.45/0.26" in preprocessing_text(rgb, (32, 32))
