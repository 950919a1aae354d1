"""Validation of user-supplied images (uploads in the dashboard, files on the CLI).

Every rejection raises :class:`UploadError` with a message meant for the user; nothing
here raises a raw PIL or OS error. The pixel limit is checked on the header, before anything
is decoded; an accepted image is decoded (a JPEG directly at a reduced scale) and cut down to
at most :data:`WORK_SIDE` pixels on its long side, aspect kept, in its own mode. Mode
conversion (RGBA, palette, CMYK, grayscale) happens afterwards, in the model's transform
(:func:`wfexplain.data.build_transform`), so nothing downstream handles megapixels.

Shape rules, also read from the header: each side at least :data:`MIN_SIDE` pixels and the long
side at most :data:`MAX_ASPECT` times the short one. The model's transform squeezes any image
into its input (aspect not kept; or cuts its centre, with a ``crop_pct``), so a 1x1 dot or a 10000x1 line would reach it as a flat
or smeared square that explains nothing; such files are refused with their size rather than drawn
(a 1-pixel-high strip also breaks every thumbnail: scaled to a display width it is 0 pixels high).

PNG ancillary chunks (zTXt, iTXt, iCCP) are compressed; Pillow stops inflating one at
``PngImagePlugin.MAX_TEXT_CHUNK`` (1 MB, 64 MB for all text) and raises ``ValueError`` unless the
process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set (which would also accept truncated files, so
it is left alone): such a decompression bomb is refused as an :class:`UploadError`, whether its chunk
comes before the pixels (read by ``Image.open``) or after them (read by ``load``).
"""

from __future__ import annotations

import io
import zlib

from PIL import Image, PngImagePlugin, UnidentifiedImageError

MAX_BYTES = 10 * 1024 * 1024  # 10 MB; .streamlit/config.toml's server.maxUploadSize matches it
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE  # 16.8 megapixels, read from the header: a bigger image is never decoded
WORK_SIDE = 1024  # accepted images are downscaled to at most this on the long side
LIMIT_TEXT = f"{MAX_PIXELS / 1e6:.1f} megapixels (e.g. {MAX_SIDE}x{MAX_SIDE})"
MIN_SIDE = 8  # pixels, each side
MAX_ASPECT = 20  # the long side at most this many times the short one
SHAPE_TEXT = f"at least {MIN_SIDE} pixels on each side and a long side at most {MAX_ASPECT} times the short one"
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class UploadError(ValueError):
    """An uploaded file cannot be used; the message explains why, for the user."""


def _is_chunk_bomb(e: Exception) -> bool:
    """Whether ``e`` is Pillow refusing a PNG text/ICC chunk that inflates past MAX_TEXT_CHUNK or MAX_TEXT_MEMORY."""
    text = str(e)
    return isinstance(e, ValueError) and ("MAX_TEXT_CHUNK" in text or "MAX_TEXT_MEMORY" in text)


def _bomb_error(name: str) -> UploadError:
    return UploadError(f"{name} has PNG metadata (a text or colour-profile chunk) that decompresses past Pillow's limit "
                       f"({PngImagePlugin.MAX_TEXT_CHUNK / 2**20:g} MB a chunk, "
                       f"{PngImagePlugin.MAX_TEXT_MEMORY / 2**20:g} MB in all): a decompression bomb. Save the image "
                       "again without its metadata.")


def read_image(data: bytes, name: str = "upload") -> Image.Image:
    """Decode and validate an uploaded image.

    Args:
        data: the file's bytes.
        name: file name, for messages.

    Returns:
        A loaded single-frame PIL image (any 8-bit mode, as uploaded) of at most
        :data:`WORK_SIDE` pixels on its long side; ``info["original_size"]`` is the uploaded size.

    Raises:
        UploadError: empty, too large, not an image, unsupported format, truncated or corrupt,
            a PNG metadata decompression bomb, animated, over :data:`MAX_PIXELS` (16.8 megapixels),
            more than 8 bits per channel, a side under :data:`MIN_SIDE` pixels, or more elongated
            than :data:`MAX_ASPECT`:1.
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
        raise UploadError(f"{name} is too large in pixels; the limit is {LIMIT_TEXT}.") from None
    except ValueError as e:
        if _is_chunk_bomb(e):
            raise _bomb_error(name) from None
        raise UploadError(f"{name} is truncated or corrupt ({e}).") from None
    except (OSError, EOFError, zlib.error) as e:
        raise UploadError(f"{name} is truncated or corrupt ({e}).") from None
    if im.format not in FORMATS:
        raise UploadError(f"{name} is a {im.format} image; supported formats are {', '.join(FORMATS)}.")
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise UploadError(f"{name} is {w}x{h} = {w * h / 1e6:.1f} megapixels; the limit is {LIMIT_TEXT}.")
    frames = getattr(im, "n_frames", 1)  # only multi-frame formats have it
    if frames > 1:
        raise UploadError(f"{name} is animated ({frames} frames); upload a single still image.")
    if im.mode in HIGH_BIT_MODES or (im.format == "PNG" and data[24:25] == b"\x10"):
        raise UploadError(f"{name} has 16 bits per channel ({im.mode}); save it as an 8-bit image.")
    if min(w, h) < MIN_SIDE:
        raise UploadError(f"{name} is {w}x{h} pixels; images need {SHAPE_TEXT} (the model resizes them to its "
                          "square input).")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise UploadError(f"{name} is {w}x{h} pixels, {max(w, h) / min(w, h):.0f}:1; images need {SHAPE_TEXT} "
                          "(the model squeezes them into its square input).")
    longest = max(w, h)
    if im.format == "JPEG" and longest > WORK_SIDE:  # decode at 1/2, 1/4 or 1/8 scale, still >= the work size
        im.draft(None, (max(1, w * WORK_SIDE // longest), max(1, h * WORK_SIDE // longest)))
    try:
        im.load()
        if max(im.size) > WORK_SIDE:  # reduce() by an integer factor, then resample; same mode
            im.thumbnail((WORK_SIDE, WORK_SIDE), reducing_gap=2.0)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:
        if _is_chunk_bomb(e):
            raise _bomb_error(name) from None
        raise UploadError(f"{name} is truncated or corrupt ({e}).") from None
    im.info["original_size"] = (w, h)
    return im


def display_copy(im: Image.Image, side: int) -> Image.Image:
    """A copy of an accepted upload to draw "as given": at most ``side`` pixels a side, in L, RGB or RGBA.

    A drawing library reads an image's raw bands: a palette image would show its palette indices,
    CMYK its inks as RGB channels, and a two-band LA image cannot be drawn at all. Those modes are
    converted here, as an image viewer would show them (transparency kept as RGBA).
    """
    alpha = im.mode in ("LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)
    out = im if im.mode in ("L", "RGB", "RGBA") else im.convert("RGBA" if alpha else "L" if im.mode == "1" else "RGB")
    out = out.copy()
    out.thumbnail((side, side))
    return out


def out_of_domain(model, x, detector) -> list[str]:
    """Reasons, in words with numbers, to think a model-ready input ``x`` ([1, C, H, W], normalised) is unlike the
    training data of ``model`` (a :class:`~wfexplain.filtering.FilteredModel`, scored unfiltered).

    ``detector`` is a :class:`wfexplain.explain.ood.Detector` calibrated for ``model`` (max-softmax, energy and
    Mahalanobis scores, and the pixel statistics); ``None`` when none could be built: then only the normalised pixel
    statistics are checked (mean near 0 and std near 1 per image for training images).
    """
    from . import ood

    if detector is None:
        mean, std = float(x.mean()), float(x.std())
        usual = ood.PIXEL_MEAN[0] <= mean <= ood.PIXEL_MEAN[1] and ood.PIXEL_STD[0] <= std <= ood.PIXEL_STD[1]
        return [] if usual else [ood.PIXEL_REASON.format(mean=mean, std=std)]
    return detector.decide({k: float(v[0]) for k, v in ood.score(model, detector, x).items()})


def preprocessing_text(info, size: tuple[int, int]) -> str:
    """What the model's preprocessing did to an image of ``size`` (w, h): mode, resize and normalisation."""
    from ..data.transforms import resized_hw

    w, h = size
    H, W = info.input_hw
    if info.crop_pct is None:
        resize = "kept at" if (w, h) == (W, H) else f"resized from {w}x{h} to"
        resize += f" {W}x{H} (aspect not kept)"
    else:
        rw, rh = resized_hw(h, w, info)[::-1]
        resize = f"resized from {w}x{h} to {rw}x{rh} (aspect kept), its centre {W}x{H} cropped"
    resize += "" if info.interpolation == "bilinear" else f" ({info.interpolation})"
    mode = "grayscale" if info.in_chans == 1 else "RGB"
    stats = ", ".join(f"{m:.3g}/{s:.3g}" for m, s in zip(info.mean, info.std, strict=True))
    return f"model input: {mode}, {resize}, normalised (x − mean)/std with mean/std {stats} per channel"
