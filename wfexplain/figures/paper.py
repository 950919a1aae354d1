"""Matplotlib figures for papers: memory heatmaps and attribution panels, rendered to PNG, SVG or PDF.

Figures are created directly (never through ``pyplot``), so no global state is touched and they
can be built from several threads (Streamlit sessions) at once; :func:`figure_bytes` renders one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..explain import analysis
from .common import MEMORY_CMAP, _check_names, to_numpy

FIGURE_FORMATS = ("png", "svg", "pdf")
FIGURE_MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}  # for downloads
MAX_VECTOR_CELLS = 3_000  # heatmap cells drawn as vector rectangles; larger panels are one embedded image each
# Venues' PDF checks reject Type 3 fonts: embed TrueType (Type 42); SVG keeps text as editable text.
_PAPER_RC: dict[str, Any] = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}


def memory_figure(memory, class_names: Sequence[str], layers: Sequence[str] | None = None,
                  order_mode: str = "original", cmap: str = MEMORY_CMAP, width: float = 7.0) -> Figure:
    """Memory matrices for a paper: one row of axes per layer, one shared colour scale.

    Each panel shows ``alpha`` ``[N, K_l]`` with classes (names) on y and components on x,
    ordered by ``order_mode`` (see :func:`wfexplain.explain.analysis.order_components`). All
    panels use ``vmin=0, vmax=1`` and share a single colorbar. ``width`` is in inches
    (7 = a two-column paper's text width); the height grows with the number of layers
    and classes, so pass ``layers`` to pick a few for print.
    """
    mem = analysis.select_layers(analysis.as_memory(memory), layers)
    n = next(iter(mem.values())).shape[0]
    names = _check_names(class_names, n, "the memory")
    panel_h = max(0.9, 0.16 * n + 0.6)
    fig = Figure(figsize=(width, panel_h * len(mem) + 0.3), layout="constrained")
    axes = fig.subplots(len(mem), 1, squeeze=False)[:, 0]
    image = None
    order_label = {"original": "", "specificity": ", ordered by class specificity",
                   "clustered": ", ordered by clustering"}
    for ax, (layer, a) in zip(axes, mem.items(), strict=True):
        perm = analysis.order_components(a, order_mode)
        values = a.numpy()[:, perm.numpy()]
        # Vector rectangles; a panel of many cells becomes one embedded image (never one per cell or per layer).
        image = ax.pcolormesh(values, vmin=0.0, vmax=1.0, cmap=cmap, rasterized=values.size > MAX_VECTOR_CELLS)
        ax.invert_yaxis()  # class 0 on top, as in a matrix
        k = values.shape[1]
        ax.set_title(f"{layer}  (K = {k})", fontsize=8, loc="left")
        # parse_math=False: a class name is data, drawn as written ("$^$" in one would crash mathtext)
        ax.set_yticks([i + 0.5 for i in range(n)], names, fontsize=max(4, 8 - n // 10), parse_math=False)
        ax.set_ylabel("filter of class", fontsize=7)
        ax.set_xlabel(f"component{'' if order_mode == 'original' else ' position'}{order_label[order_mode]}", fontsize=7)
        if order_mode != "original" and k <= 32:
            ax.set_xticks([i + 0.5 for i in range(k)], [str(int(i)) for i in perm], fontsize=5)
        ax.tick_params(axis="x", labelsize=6)
    assert image is not None  # the loop ran: select_layers and as_memory refuse an empty memory
    cbar = fig.colorbar(image, ax=list(axes), shrink=min(1.0, 3.0 / len(mem) + 0.2), aspect=30)
    cbar.set_label("alpha (0 = switched off, 1 = kept)", fontsize=7)
    cbar.ax.tick_params(labelsize=6)
    return fig


def _panel(x) -> np.ndarray:
    a = to_numpy(x).astype(float)
    a = np.squeeze(a)
    if a.ndim == 3:  # [C, H, W] or [H, W, C]: sum the channel axis
        a = a.sum(0) if a.shape[0] <= 4 else a.sum(-1)
    if a.ndim != 2:
        raise ValueError(f"an attribution map must be [H, W] (or with a channel axis), got shape {np.shape(x)}")
    return a


def _display_image(image) -> tuple[np.ndarray, str | None]:
    img = np.squeeze(to_numpy(image).astype(float))
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img, ("gray" if img.ndim == 2 else None)


def _overlay(base: np.ndarray, attribution: np.ndarray, norm, cmap, alpha: float) -> np.ndarray:
    """``attribution`` coloured by ``cmap`` over ``base`` shown in grey, opaque where it is strongest.

    One RGB array (one embedded image per panel in PDF/SVG). A pixel's opacity is ``alpha`` times
    its magnitude relative to the scale, so where the map is 0 the input shows through unchanged.
    """
    gray = base if base.ndim == 2 else base[..., :3].mean(-1)
    if gray.shape != attribution.shape:
        raise ValueError(f"cannot overlay a {attribution.shape} map on a {gray.shape} image")
    colours = matplotlib.colormaps[cmap](norm(attribution))[..., :3]
    weight = alpha * np.clip(np.abs(attribution) / max(abs(norm.vmin), abs(norm.vmax)), 0.0, 1.0)[..., None]
    return (1.0 - weight) * np.repeat(gray[..., None], 3, axis=-1) + weight * colours


def attribution_figure(image, maps: Mapping[str, np.ndarray], title: str | None = None,
                       difference=None, difference_title: str = "difference", cmap: str = "RdBu_r",
                       original=None, original_title: str = "as given", overlay: bool = True,
                       overlay_alpha: float = 0.75) -> Figure:
    """The model's input, then each attribution map on one shared symmetric colour scale.

    Args:
        image: the model's input ``[C, H, W]``, ``[H, W, C]`` or ``[H, W]`` (min-max scaled for display).
        maps: title -> map ``[H, W]`` (a channel axis is summed); all share
            ``[-m, m]`` with ``m = max |map|`` and one colorbar (red positive, blue negative).
            With ``overlay`` each map is drawn over the input in grey (:func:`_overlay`).
        title: figure title (e.g. method, target and forget set).
        difference: optional extra map (e.g. filtered minus original attribution) drawn last
            with its own symmetric scale and colorbar (also overlaid).
        original: optional image as the user gave it (e.g. a colour photo before resizing),
            drawn first under ``original_title``.
    """
    panels = {name: _panel(m) for name, m in maps.items()}
    diff = None if difference is None else _panel(difference)
    first = 1 + (original is not None)
    n = first + len(panels) + (diff is not None)
    fig = Figure(figsize=(1.9 * n + 0.8, 2.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    img, gray = _display_image(image)
    if original is not None:
        photo, photo_cmap = _display_image(original)
        axes[0].imshow(photo, cmap=photo_cmap, vmin=0, vmax=1)
        axes[0].set_title(original_title, fontsize=8)
    axes[first - 1].imshow(img, cmap=gray, vmin=0, vmax=1, interpolation="nearest")
    axes[first - 1].set_title("model input", fontsize=8)

    def draw(ax, p, lim: float):
        norm = Normalize(-lim, lim)
        if overlay:
            ax.imshow(_overlay(img, p, norm, cmap, overlay_alpha), interpolation="nearest")
        else:
            ax.imshow(p, cmap=cmap, norm=norm, interpolation="nearest")
        return ScalarMappable(norm=norm, cmap=cmap)

    lim = max((float(np.abs(p).max()) for p in panels.values()), default=0.0) or 1.0
    scale = None
    for ax, (name, p) in zip(axes[first:], panels.items(), strict=False):
        scale = draw(ax, p, lim)
        ax.set_title(str(name), fontsize=8, parse_math=False)
    if scale is not None:
        cb = fig.colorbar(scale, ax=list(axes[first : first + len(panels)]), shrink=0.8)
        cb.set_label("attribution (+ supports the class)", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    if diff is not None:
        dscale = draw(axes[-1], diff, float(np.abs(diff).max()) or 1.0)
        axes[-1].set_title(difference_title, fontsize=8)
        cb = fig.colorbar(dscale, ax=axes[-1], shrink=0.8)
        cb.set_label(difference_title, fontsize=7)
        cb.ax.tick_params(labelsize=6)
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= first - 1:
            ax.set_xlabel("x (pixels)", fontsize=7)
        ax.set_ylabel("y (pixels)" if i == first - 1 else "", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9, parse_math=False)  # names a class: data, never mathtext
    return fig


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 300) -> bytes:
    """Render a matplotlib figure to ``png``, ``svg`` or ``pdf`` bytes (no creation date
    embedded in SVG/PDF, so the same figure gives the same bytes; TrueType fonts in PDF, text as
    text in SVG)."""
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; choose one of {', '.join(FIGURE_FORMATS)}")
    if not isinstance(fig, Figure):
        raise TypeError(f"figure_bytes renders matplotlib figures, got {type(fig).__name__} "
                        "(plotly figures: use fig.to_html or fig.to_json)")
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    buf = io.BytesIO()
    with matplotlib.rc_context(_PAPER_RC):  # type: ignore[arg-type]  # stubs want literal rc keys
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()
