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
from matplotlib.figure import Figure

from ..explain import analysis
from .common import _check_names, to_numpy

FIGURE_FORMATS = ("png", "svg", "pdf")
MAX_VECTOR_CELLS = 3_000  # heatmap cells drawn as vector rectangles; larger panels are one embedded image each
# Venues' PDF checks reject Type 3 fonts: embed TrueType (Type 42); SVG keeps text as editable text.
_PAPER_RC: dict[str, Any] = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}


def memory_figure(memory, class_names: Sequence[str], layers: Sequence[str] | None = None,
                  order_mode: str = "original", cmap: str = "viridis", width: float = 7.0) -> Figure:
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
        ax.set_yticks([i + 0.5 for i in range(n)], names, fontsize=max(4, 8 - n // 10))
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


def attribution_figure(image, maps: Mapping[str, np.ndarray], title: str | None = None,
                       difference=None, difference_title: str = "difference", cmap: str = "RdBu_r") -> Figure:
    """The input image, then each attribution map on one shared symmetric colour scale.

    Args:
        image: ``[C, H, W]``, ``[H, W, C]`` or ``[H, W]`` (min-max scaled for display).
        maps: title -> map ``[H, W]`` (a channel axis is summed); all share
            ``[-m, m]`` with ``m = max |map|`` and one colorbar (red positive, blue negative).
        title: figure title.
        difference: optional extra map (e.g. filtered minus original attribution) drawn last
            with its own symmetric scale and colorbar.
    """
    panels = {name: _panel(m) for name, m in maps.items()}
    diff = None if difference is None else _panel(difference)
    n = 1 + len(panels) + (diff is not None)
    fig = Figure(figsize=(1.9 * n + 0.8, 2.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    img, gray = _display_image(image)
    axes[0].imshow(img, cmap=gray, vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("model input", fontsize=8)
    lim = max((float(np.abs(p).max()) for p in panels.values()), default=0.0) or 1.0
    im = None
    for ax, (name, p) in zip(axes[1:], panels.items(), strict=False):
        im = ax.imshow(p, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(str(name), fontsize=8)
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes[1 : 1 + len(panels)]), shrink=0.8)
        cb.set_label("attribution (+ supports the class)", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    if diff is not None:
        dl = float(np.abs(diff).max()) or 1.0
        dim = axes[-1].imshow(diff, cmap=cmap, vmin=-dl, vmax=dl, interpolation="nearest")
        axes[-1].set_title(difference_title, fontsize=8)
        cb = fig.colorbar(dim, ax=axes[-1], shrink=0.8)
        cb.set_label(difference_title, fontsize=7)
        cb.ax.tick_params(labelsize=6)
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("x (pixels)", fontsize=7)
        ax.set_ylabel("y (pixels)" if i == 0 else "", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
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
