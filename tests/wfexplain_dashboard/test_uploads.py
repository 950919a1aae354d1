"""Uploads on the Explain page: a hostile file gets a message, never an exception. What read_image refuses and
why: tests/wfexplain/explain/test_uploads.py."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # AppTest runs of the whole app

RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def bomb_png() -> bytes:
    """A 16x16 PNG with a zTXt chunk (before the pixels) of 20 MB of zeros deflated to about 20 kB."""
    z = zlib.compressobj(9)
    payload = b"Comment\x00\x00" + b"".join(z.compress(b"\x00" * 2**20) for _ in range(20)) + z.flush()
    data = encode(Image.new("RGB", (16, 16), "red"), "PNG")
    chunk = struct.pack(">I", len(payload)) + b"zTXt" + payload + struct.pack(">I", zlib.crc32(b"zTXt" + payload))
    return data[:33] + chunk + data[33:]  # 33: signature (8) + IHDR chunk (25)


def test_explain_page_answers_each_hostile_upload_with_a_message(open_app, assert_clean):
    """The three files that crashed Explain, uploaded in the dashboard: a message each, then a good file works."""
    at = open_app("views/explain.py")
    at.multiselect(key="explain_methods").set_value(["Saliency"]).run()
    at.radio(key="explain_source").set_value("Upload").run()
    hostile = {"dot.png": (encode(Image.new("RGB", (1, 1)), "PNG"), "1x1 pixels"),
               "[line](http:evil).png": (encode(Image.new("RGB", (10000, 1)), "PNG"), "10000x1 pixels"),
               "bomb.png": (bomb_png(), "decompression bomb")}
    for name, (data, why) in hostile.items():
        at.file_uploader(key="explain_upload").upload(name, data, "image/png").run()
        assert_clean(at)
        (error,) = [e.value for e in at.error]
        assert error.startswith("Cannot use this file: ") and why in error
        assert "](" not in error.replace("\\]\\(", "")  # the file name is escaped markdown
        assert not [m.value for m in at.markdown if m.value.startswith("####")]
    at.file_uploader(key="explain_upload").upload("ok.png", encode(RGB.convert("LA"), "PNG"), "image/png").run()
    assert_clean(at)
    assert not at.error and [m.value for m in at.markdown if m.value.startswith("####")] == ["#### Saliency"]
