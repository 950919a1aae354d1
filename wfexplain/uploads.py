"""Validation of user-supplied images (uploads in the dashboard, files on the CLI).

Every rejection raises :class:`UploadError` with a message meant for the user; nothing
here raises a raw PIL or OS error. Accepted images are fully decoded single-frame
images in any 8-bit mode; mode conversion (RGBA, palette, CMYK, grayscale) happens in
the model's transform (:func:`wfexplain.data.build_transform`).
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

MAX_BYTES = 10 * 1024 * 1024  # 10 MB
MAX_PIXELS = 40_000_000  # 40 megapixels
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class UploadError(ValueError):
    """An uploaded file cannot be used; the message explains why, for the user."""


def read_image(data: bytes, name: str = "upload") -> Image.Image:
    """Decode and validate an uploaded image.

    Args:
        data: the file's bytes.
        name: file name, for messages.

    Returns:
        A loaded single-frame PIL image (any 8-bit mode).

    Raises:
        UploadError: empty, too large, not an image, unsupported format, truncated,
            animated, over 40 megapixels, or more than 8 bits per channel.
    """
    if not data:
        raise UploadError(f"{name} is empty.")
    if len(data) > MAX_BYTES:
        raise UploadError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB.")
    try:
        im = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except UnidentifiedImageError:
        raise UploadError(f"{name} is not an image PIL can read (expected {', '.join(FORMATS)}).") from None
    except Image.DecompressionBombError:
        raise UploadError(f"{name} is too large in pixels; the limit is {MAX_PIXELS // 10**6} megapixels.") from None
    if im.format not in FORMATS:
        raise UploadError(f"{name} is a {im.format} image; supported formats are {', '.join(FORMATS)}.")
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise UploadError(f"{name} is {w}x{h} = {w * h / 1e6:.1f} megapixels; the limit is {MAX_PIXELS // 10**6}.")
    if getattr(im, "n_frames", 1) > 1:
        raise UploadError(f"{name} is animated ({im.n_frames} frames); upload a single still image.")
    if im.mode in HIGH_BIT_MODES or (im.format == "PNG" and data[24:25] == b"\x10"):
        raise UploadError(f"{name} has 16 bits per channel ({im.mode}); save it as an 8-bit image.")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise UploadError(f"{name} is truncated or corrupt ({e}).") from None
    return im
