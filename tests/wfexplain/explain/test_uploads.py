import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from wfexplain.data import build_transform
from wfexplain.explain.uploads import MAX_PIXELS, WORK_SIDE, UploadError, read_image


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
def test_valid_images_become_model_inputs(mode, fmt, tiny_info):
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
def test_big_allowed_images_are_downscaled_in_their_own_mode(mode, fmt, tiny_info):
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


def test_out_of_domain_without_a_detector_checks_the_pixel_statistics():
    import torch

    from wfexplain.explain.uploads import out_of_domain

    typical = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert out_of_domain(None, typical, None) == []
    saturated = torch.full((1, 3, 32, 32), 4.0)  # a flat, bright image far from the training statistics
    assert out_of_domain(None, saturated, None) == [
        "its normalised pixels have mean +4.00 and std 0.00, where training images have about 0 and 1"]


def test_out_of_domain_gives_the_detectors_reasons(trained_bars):
    import torch

    import wfexplain
    from wfexplain.explain import ood
    from wfexplain.explain.uploads import out_of_domain

    model = wfexplain.load(trained_bars)
    rng = np.random.default_rng(0)
    bars = []
    for k in range(240):  # like bar_data: dark noise, a bright bar at a class-specific row
        img = rng.integers(0, 80, size=(16, 16), dtype=np.uint8)
        img[2 + 5 * (k % 3): 5 + 5 * (k % 3)] = 230
        bars.append(img)
    x = torch.stack([model.transform(Image.fromarray(b, "L")) for b in bars])
    det = ood.calibrate(model, x[:120], torch.arange(120) % 3, x[120:], fpr=0.05)
    assert out_of_domain(model, x[120:121], det) == det.decide(
        {k: float(v[0]) for k, v in ood.score(model, det, x[120:121]).items()})
    white = model.transform(Image.new("L", (16, 16), 255)).unsqueeze(0)
    reasons = out_of_domain(model, white, det)
    assert len(reasons) >= 2 and "its normalised pixels have mean +1.00 and std 0.00" in reasons[-1]
    assert any("Mahalanobis" in r or "top class" in r or "energy" in r for r in reasons[:-1])


def test_preprocessing_text_names_mode_resize_and_both_statistics():
    from wfexplain.data import DatasetInfo
    from wfexplain.explain.uploads import preprocessing_text

    info = DatasetInfo("fashion-mnist", tuple("abcdefghij"), 1, 28, (0.286,), (0.353,))
    assert preprocessing_text(info, (640, 480)) == (
        "model input: grayscale, resized from 640x480 to 28x28 (aspect not kept), normalised (x − mean)/std with "
        "mean/std 0.286/0.353 per channel")
    rgb = DatasetInfo("cifar10", tuple("abcdefghij"), 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    assert "RGB, kept at 32x32" in preprocessing_text(rgb, (32, 32)) and "0.45/0.26" in preprocessing_text(rgb, (32, 32))


# ---------------------------------------------------------------- hostile but accepted-by-the-uploader files


def png_with_chunk(kind: bytes, payload: bytes, after_pixels: bool = False, size: tuple[int, int] = (16, 16)) -> bytes:
    """A valid RGB PNG with one extra ancillary chunk, before the pixel data or after it."""
    data = encode(Image.new("RGB", size, "red"), "PNG")
    at = data.index(b"IEND") - 4 if after_pixels else 33  # 33: signature (8) + IHDR chunk (25)
    return data[:at] + chunk(kind, payload) + data[at:]


def zlib_bomb(megabytes: int = 20) -> bytes:
    """``megabytes`` of zeros deflated to about 20 kB."""
    z = zlib.compressobj(9)
    block = b"\x00" * 2**20
    return b"".join(z.compress(block) for _ in range(megabytes)) + z.flush()


BOMBS = {
    "zTXt": (b"zTXt", b"Comment\x00\x00" + zlib_bomb(), False),
    "iCCP": (b"iCCP", b"icc\x00\x00" + zlib_bomb(), False),
    "iTXt": (b"iTXt", b"Comment\x00\x01\x00\x00\x00" + zlib_bomb(), False),
    "zTXt after the pixels": (b"zTXt", b"Comment\x00\x00" + zlib_bomb(), True),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_png_metadata_decompression_bomb_is_refused(case):
    """Pillow stops inflating a text/ICC chunk at MAX_TEXT_CHUNK and raises a bare ValueError: ours names it."""
    kind, payload, after = BOMBS[case]
    data = png_with_chunk(kind, payload, after)
    assert len(data) < 100_000
    start = time.perf_counter()
    with pytest.raises(UploadError, match=r"bomb\.png has PNG metadata .* decompresses past Pillow's limit \(1 MB a chunk"
                                          r", 64 MB in all\): a decompression bomb"):
        read_image(data, "bomb.png")
    assert time.perf_counter() - start < 2.0  # the limit stops the inflation early: 20 MB is never produced
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # refused without the process-wide switch that accepts truncated files


def test_small_png_metadata_is_harmless():
    im = read_image(png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"hello")), "meta.png")
    assert im.size == (16, 16) and im.info["Comment"] == "hello"


@pytest.mark.parametrize("size", [(1, 1), (2, 1), (7, 40), (40, 7), (10000, 1), (1, 10000), (4000, 8), (161, 8),
                                  (8, 161)])
def test_tiny_or_extremely_elongated_images_are_refused_with_their_size(size):
    """A 1x1 dot or a 10000x1 line crashed Explain (a 0-pixel-high thumbnail); now refused on the header."""
    w, h = size
    data = encode(Image.new("RGB", size, "white"), "PNG")
    with pytest.raises(UploadError, match=rf"line\.png is {w}x{h} pixels[,;].*at least 8 pixels on each side and a "
                                          r"long side at most 20 times the short one"):
        read_image(data, "line.png")


def test_refused_shape_is_read_from_the_header(monkeypatch):
    def no_decode(self):
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(UploadError, match=r"line\.png is 10000x1 pixels; images need at least 8"):
        read_image(blank_rgba_png(10000, 1), "line.png")
    with pytest.raises(UploadError, match=r"strip\.png is 10000x8 pixels, 1250:1; images need"):
        read_image(blank_rgba_png(10000, 8), "strip.png")


def run_explain_path(data: bytes, info_of, name: str = "x.png") -> None:
    """What the Explain page does with an upload, minus the model: read, preprocess, draw "as given" and the input."""
    from wfexplain import figures
    from wfexplain.explain.uploads import display_copy

    im = read_image(data, name)
    for chans in (1, 3):
        x = build_transform(info_of(in_chans=chans))(im)
        assert x.shape == (chans, 16, 16) and x.isfinite().all()
    photo = display_copy(im, 256)
    assert photo.mode in ("L", "RGB", "RGBA") and max(photo.size) <= 256 and min(photo.size) >= 1
    seen = x.permute(1, 2, 0).numpy() * 0.5 + 0.5
    fig = figures.attribution_figure(seen, {"original": np.zeros((16, 16)), "filtered": np.ones((16, 16))},
                                     title="target $^$ <a href='x'>y</a>", original=np.asarray(photo),
                                     difference=np.ones((16, 16)))
    assert figures.figure_bytes(fig, "png", dpi=20).startswith(b"\x89PNG")


@pytest.mark.parametrize("size", [(8, 8), (8, 160), (160, 8), (4000, 200), (200, 4000)])
def test_smallest_and_most_elongated_allowed_images_work_end_to_end(size, tiny_info):
    run_explain_path(encode(Image.new("RGB", size, "gray"), "PNG"), tiny_info)


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("LA", "PNG"),
                                           ("1", "PNG"), ("1", "BMP"), ("P", "BMP"), ("CMYK", "JPEG"), ("L", "JPEG"),
                                           ("RGBA", "WEBP")])
def test_every_accepted_mode_works_end_to_end(mode, fmt, tiny_info):
    """An LA upload crashed the "as given" panel (two bands); palette and CMYK ones were drawn as raw bands."""
    run_explain_path(encode(RGB.convert(mode), fmt), tiny_info, f"x.{fmt.lower()}")


def test_display_copy_converts_like_a_viewer():
    from wfexplain.explain.uploads import display_copy

    assert display_copy(RGB.convert("LA"), 256).mode == "RGBA"
    assert display_copy(RGB.convert("CMYK"), 256).mode == "RGB"
    assert display_copy(RGB.convert("1"), 256).mode == "L"
    pal = RGB.convert("P")
    assert display_copy(pal, 256).mode == "RGB"
    assert np.array_equal(np.asarray(display_copy(pal, 256)), np.asarray(pal.convert("RGB")))  # colours, not indices
    pal.info["transparency"] = 0
    assert display_copy(pal, 256).mode == "RGBA"
    big = Image.new("RGB", (1024, 52))
    assert display_copy(big, 256).size == (256, 13)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_corrupted_files_either_work_or_get_a_message(fmt, tiny_info):
    """Seeded byte flips and cuts of a valid file: never an exception other than UploadError."""
    rng = np.random.default_rng(0)
    good = encode(RGB, fmt)
    for trial in range(40):
        data = bytearray(good)
        if trial % 2:
            for i in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[i] = int(rng.integers(0, 256))
        else:
            data = data[: int(rng.integers(1, len(data)))]
        try:
            im = read_image(bytes(data), f"bad.{fmt.lower()}")
        except UploadError:
            continue
        x = build_transform(tiny_info(in_chans=3))(im)
        assert x.shape == (3, 16, 16)
