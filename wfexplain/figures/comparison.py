"""Plotly figures of the Compare page: the forget-quality / retain / cost trade-off and A/B views.

Class names and method labels are data (benchmark.json, manifests): each goes through
:func:`~wfexplain.figures.common.plotly_text` before plotly sees it, so no markup in one is rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..forget import classes as forget_list
from .common import FILTERED_COLOR, FORGOTTEN_COLOR, ORIGINAL_COLOR, _plotly_names, plotly_text, to_numpy, wrapped_title

REFERENCE_COLOR = "#2ca02c"  # the Retrain oracle
B_COLOR = "#ff7f0e"


METHOD_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "pentagon", "star", "hexagon", "triangle-down", "cross", "x")
LABEL_FONT, CHAR_PX, LINE_PX = 12, 7.0, 16.0  # a label's font size and its box per character / line, in pixels
# The smallest plot area (width, height in px) the labels are placed for: Compare's chart on a desktop page, legend on
# the right. A wider area only moves the points apart: placements are checked at these widths times 1, 1.5 and 2.
PLOT_PX, SCALES = (520.0, 330.0), (1.0, 1.5, 2.0)


def label_box(text: str) -> tuple[float, float]:
    """(width, height) in pixels of a trade-off label (a generous estimate)."""
    return len(text) * CHAR_PX + 6.0, LINE_PX


def place_labels(points_px: Sequence[tuple[float, float]], radii: Sequence[float], labels: Sequence[str],
                 area: tuple[float, float] = PLOT_PX, scales: Sequence[float] = SCALES,
                 blocked: Sequence[tuple[float, float, float, float, float]] = ()) -> list[tuple[float, float] | None]:
    """A pixel shift (dx, dy; y up) of each label from its point, or None where no spot is clear.

    Greedy, in the given order: the first of eight spots around the marker whose box stays inside the plot area,
    overlaps no label placed before and no other marker, and is nearer its own point than any other, at every
    width scale (x stretched, y fixed). A point without a clear spot (one in a tight cluster) gets no label: the
    legend names it. Non-finite points get None. ``blocked``: boxes taken already, ``(x, cy, w, h, dx)`` with
    their centre at ``(x * scale + dx, cy)`` (e.g. ``x = 0, dx = w / 2`` for a box on the left edge).
    """
    w_area, h_area = area
    pts = np.asarray(points_px, dtype=float).reshape(-1, 2)
    ok = np.isfinite(pts).all(axis=1)
    placed = [tuple(map(float, b)) for b in blocked]  # x at scale 1, centre y, w, h, dx
    out: list[tuple[float, float] | None] = []

    def clear(i: int, dx: float, dy: float, w: float, h: float) -> bool:
        for s in scales:
            cx, cy = pts[i, 0] * s + dx, pts[i, 1] + dy
            if s == 1.0 and not (w / 2 <= cx <= w_area - w / 2 and h / 2 <= cy <= h_area - h / 2):
                return False
            for px, pdy, pw, ph, pdx in placed:
                if abs(cx - (px * s + pdx)) < (w + pw) / 2 and abs(cy - pdy) < (h + ph) / 2:
                    return False
            own = np.hypot(cx - pts[i, 0] * s, cy - pts[i, 1])
            for k in map(int, np.flatnonzero(ok)):
                if k == i:
                    continue
                kx, ky, r = pts[k, 0] * s, pts[k, 1], radii[k] + 2.0
                if (abs(cx - kx) < w / 2 + r and abs(cy - ky) < h / 2 + r) or np.hypot(cx - kx, cy - ky) <= own:
                    return False
        return True

    for i, text in enumerate(labels):
        if not ok[i]:
            out.append(None)
            continue
        w, h = label_box(str(text))
        r = float(radii[i]) + 3.0
        d = r / np.sqrt(2)
        spots = [(0.0, r + h / 2), (0.0, -r - h / 2), (r + w / 2, 0.0), (-r - w / 2, 0.0),
                 (d + w / 2, d + h / 2), (-d - w / 2, d + h / 2), (d + w / 2, -d - h / 2), (-d - w / 2, -d - h / 2)]
        spot = next(((dx, dy) for dx, dy in spots if clear(i, dx, dy, w, h)), None)
        if spot is not None:
            placed.append((pts[i, 0], pts[i, 1] + spot[1], w, h, spot[0]))
        out.append(spot)
    return out


def _range(values: np.ndarray, extra: float | None = None) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if extra is not None and np.isfinite(extra):
        v = np.append(v, extra)
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    pad = 0.08 * max(hi - lo, 0.02)
    return lo - pad, hi + pad


def _seconds(v: float) -> str:
    return f"{v:,.0f} s" if v >= 100 else f"{v:.3g} s"


def tradeoff_scatter(methods: Sequence[str], forget_quality, retain_accuracy, seconds, front: Sequence[int] = (),
                     original_retain: float | None = None) -> go.Figure:
    """Forget quality (x, ↑) against retain accuracy (y, ↑); marker size = time (↓, log scale).

    Each method is its own legend entry (colour, symbol, its time), so a point is named even where labels
    would collide; a text label is drawn beside a point only where :func:`place_labels` finds a clear spot.

    Args:
        methods: one label per point.
        forget_quality: e.g. 1 - forget accuracy (test), fractions.
        retain_accuracy: retain accuracy (test), fractions.
        seconds: unlearning time per point (NaN: fixed size, an open symbol, "no time").
        front: indices of the Pareto-optimal points (forget quality ↑, retain ↑, time ↓), e.g.
            from :func:`wfexplain.benchmark.comparison.pareto_front`; ringed and connected by a dashed line.
        original_retain: optional retain accuracy of the model before unlearning, drawn as a grey
            dotted line for reference (the original itself, forget quality ~0, is not plotted: it
            would squeeze the methods into one corner).
    """
    raw = [str(m) for m in methods]
    names = [plotly_text(m) for m in raw]
    x, y, t = (np.asarray(v, dtype=float).ravel() for v in (forget_quality, retain_accuracy, seconds))
    if not len(names) == len(x) == len(y) == len(t):
        raise ValueError(f"{len(names)} methods but {len(x)}, {len(y)}, {len(t)} values")
    timed = np.isfinite(t) & (t > 0)
    logt = np.where(timed, np.log10(np.where(timed, t, 1.0)), np.nan)
    lo, hi = (float(np.nanmin(logt)), float(np.nanmax(logt))) if timed.any() else (0.0, 1.0)
    size = np.where(timed, 14 + 26 * (logt - lo) / (hi - lo or 1.0), 12)
    on_front = {int(i) for i in front}
    shown = np.isfinite(x) & np.isfinite(y)
    fig = go.Figure()
    hover = "%{text}<br>forget quality %{x:.1%}<br>retain accuracy %{y:.1%}<br>time %{customdata}<extra></extra>"
    for i in np.flatnonzero(shown):
        time = _seconds(t[i]) if timed[i] else "no time"
        fig.add_trace(go.Scatter(
            x=[x[i]], y=[y[i]], text=[names[i]], customdata=[time], mode="markers", hovertemplate=hover,
            name=f"{names[i]} · {time}" + (" · Pareto" if i in on_front else ""),
            marker=dict(size=size[i], color=METHOD_COLORS[i % len(METHOD_COLORS)],
                        symbol=SYMBOLS[i % len(SYMBOLS)] + ("" if timed[i] else "-open"),
                        line=dict(width=3 if i in on_front else 0.5, color="black")),
        ))
    pts = sorted((i for i in on_front if 0 <= i < len(x) and shown[i]), key=lambda i: (x[i], -y[i]))
    if pts:
        fig.add_trace(go.Scatter(x=x[pts], y=y[pts], mode="lines", name="Pareto front (ringed)", hoverinfo="skip",
                                 line=dict(dash="dash", color="black", width=1.5)))
    xr, yr = _range(x[shown]), _range(y[shown], original_retain)
    px = [((a - xr[0]) / (xr[1] - xr[0]) * PLOT_PX[0], (b - yr[0]) / (yr[1] - yr[0]) * PLOT_PX[1]) if ok
          else (np.nan, np.nan) for a, b, ok in zip(x, y, shown, strict=True)]
    base = float(original_retain) if original_retain is not None and np.isfinite(original_retain) else None
    line = None if base is None else f"original model's retain acc. {base:.1%}"
    taken = [] if line is None or base is None else [  # the dotted line's own label
        (0.0, (base - yr[0]) / (yr[1] - yr[0]) * PLOT_PX[1] - LINE_PX / 2, *label_box(line), label_box(line)[0] / 2)]
    radii = size / 2 + np.array([3.0 if i in on_front else 0.5 for i in range(len(x))])
    for j, spot in enumerate(place_labels(px, radii, raw, blocked=taken)):
        if spot is not None:
            fig.add_annotation(x=x[j], y=y[j], text=names[j], name=f"label: {names[j]}", showarrow=False,
                               xshift=spot[0], yshift=spot[1], font=dict(size=LABEL_FONT))
    if base is not None:
        fig.add_hline(y=base, line=dict(dash="dot", color=ORIGINAL_COLOR, width=1.5),
                      annotation_text=line,
                      annotation_position="bottom left", annotation_font_color=ORIGINAL_COLOR)
    fig.update_layout(
        **wrapped_title("Trade-off: forget quality ↑ vs retain accuracy ↑ (marker size = time ↓, log; Pareto front "
                        "ringed)", 100),
        xaxis=dict(title="forget quality = 1 − forget acc. (test) ↑", tickformat=".1%", range=list(xr)),
        yaxis=dict(title="retain acc. (test) ↑", tickformat=".1%", range=list(yr)),
        legend=dict(title=dict(text="method · time"), itemsizing="constant"), height=520,
    )
    return fig


def ab_accuracy_bars(acc_a, acc_b, class_names: Sequence[str], forget, label_a: str = "A",
                     label_b: str = "B", images: str | None = None) -> go.Figure:
    """Per-class test accuracy of two methods side by side; forgotten classes shaded and labelled.

    On a forgotten class lower is better (Retrain ~0); on the others higher is better. ``images`` names the
    images both were measured on (e.g. "the benchmark's 10,000 test images"): in the title and the legend.
    """
    a, b = to_numpy(acc_a).astype(float), to_numpy(acc_b).astype(float)
    names = _plotly_names(class_names, len(a), label_a)
    if len(b) != len(a):
        raise ValueError(f"{label_a} has {len(a)} classes, {label_b} {len(b)}")
    forgotten = set(forget_list(forget))
    labels = [f"{n} (forgotten)" if i in forgotten else n for i, n in enumerate(names)]
    on = f"<br>on {plotly_text(images)}" if images else ""
    shown_a, shown_b = plotly_text(label_a), plotly_text(label_b)
    fig = go.Figure([
        go.Bar(name=f"A: {shown_a}", x=labels, y=a, marker_color=FILTERED_COLOR,
               marker_line=dict(width=[2 if i in forgotten else 0 for i in range(len(a))], color=FORGOTTEN_COLOR),
               hovertemplate=f"{shown_a}<br>%{{x}}<br>accuracy %{{y:.1%}}{on}<extra></extra>"),
        go.Bar(name=f"B: {shown_b}", x=labels, y=b, marker_color=B_COLOR,
               marker_line=dict(width=[2 if i in forgotten else 0 for i in range(len(b))], color=FORGOTTEN_COLOR),
               hovertemplate=f"{shown_b}<br>%{{x}}<br>accuracy %{{y:.1%}}{on}<extra></extra>"),
    ])
    for i in sorted(forgotten):
        if 0 <= i < len(names):
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor=FORGOTTEN_COLOR, opacity=0.1, line_width=0, layer="below")
    fig.update_layout(
        barmode="group",
        **wrapped_title(f"Per-class test accuracy, {label_a} vs {label_b}: forgotten (red) lower is better, others "
                        "higher" + (f"; both on {images}" if images else ""), 110),
        xaxis=dict(title="test class", type="category"),
        yaxis=dict(title="accuracy", range=[0, 1.05], tickformat=".0%"),
        legend=dict(title="method"),
    )
    return fig


def forget_predictions_heatmap(predictions: Mapping[str, Sequence[float]], class_names: Sequence[str],
                               forget_class: int, reference: str | None = "retrain",
                               distances: Mapping[str, float] | None = None) -> go.Figure:
    """Where the forgotten class's test images go: methods (rows) x predicted class (columns).

    Each row is a method's distribution of predictions on the forgotten class's test images
    (fractions summing to 1). The ``reference`` row (the Retrain oracle) comes first; ``distances``
    (e.g. total variation to it, :func:`wfexplain.benchmark.comparison.prediction_distances`) are added to
    the row labels: the closer to the oracle, the better. The true-class column should be ~0.
    """
    if not predictions:
        raise ValueError("no predictions to show")
    rows = sorted(predictions, key=lambda m: m != reference)  # stable: the reference first
    z = np.array([np.asarray(predictions[m], dtype=float) for m in rows])
    names = _plotly_names(class_names, z.shape[1], "the predictions")
    cols = [f"{n} (true class)" if i == forget_class else n for i, n in enumerate(names)]
    dist = distances or {}

    def label(m: str) -> str:
        d = dist.get(m)
        return plotly_text(m if m == reference or d is None or not np.isfinite(d) else f"{m} (TV {d:.2f})")

    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=[label(m) for m in rows], zmin=0.0, zmax=1.0, colorscale="Blues",
        text=[[f"{v:.0%}" if v >= 0.005 else "" for v in row] for row in z], texttemplate="%{text}",
        colorbar=dict(title=dict(text="fraction of images")), xgap=1, ygap=1,
        hovertemplate="%{y}<br>predicted %{x}<br>%{z:.1%} of the images<extra></extra>",
    ))
    title = f"Where class {names[forget_class]}'s test images are predicted, per method"
    if reference is not None and reference in predictions:
        title += f" (first row: {plotly_text(reference)}; closest to it is best, TV = total-variation distance to it)"
    fig.update_layout(title=title, xaxis=dict(title="predicted class", type="category"),
                      yaxis=dict(title="method", autorange="reversed", type="category"))
    return fig
