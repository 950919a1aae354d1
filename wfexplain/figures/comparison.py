"""Plotly figures of the Compare page: the forget-quality / retain / cost trade-off and A/B views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..forget import classes as forget_list
from .common import FILTERED_COLOR, FORGOTTEN_COLOR, ORIGINAL_COLOR, _check_names, to_numpy

REFERENCE_COLOR = "#2ca02c"  # the Retrain oracle
B_COLOR = "#ff7f0e"


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    k0, k1 = int(np.floor(lo)), int(np.ceil(hi))
    vals = [float(k) for k in range(k0, k1 + 1)]
    return vals, [f"{10.0 ** k:g} s" for k in range(k0, k1 + 1)]


def tradeoff_scatter(methods: Sequence[str], forget_quality, retain_accuracy, seconds, front: Sequence[int] = (),
                     original_retain: float | None = None) -> go.Figure:
    """Forget quality (x, ↑) against retain accuracy (y, ↑); marker size and colour = time (↓, log scale).

    Args:
        methods: one label per point.
        forget_quality: e.g. 1 - forget accuracy (test), fractions.
        retain_accuracy: retain accuracy (test), fractions.
        seconds: unlearning time per point (NaN: drawn grey, fixed size, "no time").
        front: indices of the Pareto-optimal points (forget quality ↑, retain ↑, time ↓), e.g.
            from :func:`wfexplain.benchmark.comparison.pareto_front`; ringed and connected by a dashed line.
        original_retain: optional retain accuracy of the model before unlearning, drawn as a grey
            dotted line for reference (the original itself, forget quality ~0, is not plotted: it
            would squeeze the methods into one corner).
    """
    names = [str(m) for m in methods]
    x, y, t = (np.asarray(v, dtype=float).ravel() for v in (forget_quality, retain_accuracy, seconds))
    if not len(names) == len(x) == len(y) == len(t):
        raise ValueError(f"{len(names)} methods but {len(x)}, {len(y)}, {len(t)} values")
    timed = np.isfinite(t) & (t > 0)
    logt = np.where(timed, np.log10(np.where(timed, t, 1.0)), np.nan)
    lo, hi = (float(np.nanmin(logt)), float(np.nanmax(logt))) if timed.any() else (0.0, 1.0)
    span = hi - lo or 1.0
    size = np.where(timed, 14 + 26 * (logt - lo) / span, 12)
    on_front = set(int(i) for i in front)
    fig = go.Figure()
    hover = "%{text}<br>forget quality %{x:.1%}<br>retain accuracy %{y:.1%}<br>time %{customdata}<extra></extra>"
    times = [f"{v:.3g} s" if ok else "—" for v, ok in zip(t, timed, strict=True)]
    idx = np.flatnonzero(timed)
    if len(idx):
        tickvals, ticktext = _log_ticks(lo, hi)
        fig.add_trace(go.Scatter(
            x=x[idx], y=y[idx], text=[names[i] for i in idx], customdata=[times[i] for i in idx], mode="markers+text",
            textposition="top center", name="method (size, colour = time)", hovertemplate=hover,
            marker=dict(size=size[idx], color=logt[idx], colorscale="Viridis", cmin=lo, cmax=lo + span,
                        line=dict(width=[3 if i in on_front else 0.5 for i in idx], color="black"),
                        colorbar=dict(title=dict(text="time ↓ (log)"), tickvals=tickvals, ticktext=ticktext)),
        ))
    idx = np.flatnonzero(~timed)
    if len(idx):
        fig.add_trace(go.Scatter(
            x=x[idx], y=y[idx], text=[names[i] for i in idx], customdata=[times[i] for i in idx], mode="markers+text",
            textposition="top center", name="method, no time", hovertemplate=hover,
            marker=dict(size=12, color="#bbbbbb", line=dict(width=[3 if i in on_front else 0.5 for i in idx],
                                                            color="black")),
        ))
    pts = sorted((int(i) for i in on_front if 0 <= i < len(x)), key=lambda i: (x[i], -y[i]))
    if pts:
        fig.add_trace(go.Scatter(x=x[pts], y=y[pts], mode="lines+markers", name="Pareto front (ringed)",
                                 line=dict(dash="dash", color="black", width=1.5),
                                 marker=dict(size=6, color="black", symbol="circle-open"), hoverinfo="skip"))
    if original_retain is not None and np.isfinite(original_retain):
        fig.add_hline(y=float(original_retain), line=dict(dash="dot", color=ORIGINAL_COLOR, width=1.5),
                      annotation_text=f"original model's retain acc. {original_retain:.1%}",
                      annotation_position="bottom left", annotation_font_color=ORIGINAL_COLOR)
    fig.update_layout(
        title="Trade-off: forget quality ↑ vs retain accuracy ↑; marker size and colour = time ↓ (Pareto front ringed)",
        xaxis=dict(title="forget quality = 1 − forget acc. (test) ↑", tickformat=".1%"),
        yaxis=dict(title="retain acc. (test) ↑", tickformat=".1%"),
        legend=dict(orientation="h", yanchor="top", y=-0.2),
    )
    return fig


def ab_accuracy_bars(acc_a, acc_b, class_names: Sequence[str], forget, label_a: str = "A",
                     label_b: str = "B") -> go.Figure:
    """Per-class test accuracy of two methods side by side; forgotten classes shaded and labelled.

    On a forgotten class lower is better (Retrain ~0); on the others higher is better.
    """
    a, b = to_numpy(acc_a).astype(float), to_numpy(acc_b).astype(float)
    names = _check_names(class_names, len(a), label_a)
    if len(b) != len(a):
        raise ValueError(f"{label_a} has {len(a)} classes, {label_b} {len(b)}")
    forgotten = set(forget_list(forget))
    labels = [f"{n} (forgotten)" if i in forgotten else n for i, n in enumerate(names)]
    fig = go.Figure([
        go.Bar(name=f"A: {label_a}", x=labels, y=a, marker_color=FILTERED_COLOR,
               marker_line=dict(width=[2 if i in forgotten else 0 for i in range(len(a))], color=FORGOTTEN_COLOR),
               hovertemplate=f"{label_a}<br>%{{x}}<br>accuracy %{{y:.1%}}<extra></extra>"),
        go.Bar(name=f"B: {label_b}", x=labels, y=b, marker_color=B_COLOR,
               marker_line=dict(width=[2 if i in forgotten else 0 for i in range(len(b))], color=FORGOTTEN_COLOR),
               hovertemplate=f"{label_b}<br>%{{x}}<br>accuracy %{{y:.1%}}<extra></extra>"),
    ])
    for i in sorted(forgotten):
        if 0 <= i < len(names):
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor=FORGOTTEN_COLOR, opacity=0.1, line_width=0, layer="below")
    fig.update_layout(
        barmode="group",
        title=f"Per-class test accuracy, {label_a} vs {label_b}: forgotten class (red) lower is better, others higher",
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
    names = _check_names(class_names, z.shape[1], "the predictions")
    cols = [f"{n} (true class)" if i == forget_class else n for i, n in enumerate(names)]
    dist = distances or {}

    def label(m: str) -> str:
        d = dist.get(m)
        return m if m == reference or d is None or not np.isfinite(d) else f"{m} (TV {d:.2f})"

    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=[label(m) for m in rows], zmin=0.0, zmax=1.0, colorscale="Blues",
        text=[[f"{v:.0%}" if v >= 0.005 else "" for v in row] for row in z], texttemplate="%{text}",
        colorbar=dict(title=dict(text="fraction of images")), xgap=1, ygap=1,
        hovertemplate="%{y}<br>predicted %{x}<br>%{z:.1%} of the images<extra></extra>",
    ))
    title = f"Where class {names[forget_class]}'s test images are predicted, per method"
    if reference is not None and reference in predictions:
        title += f" (first row: {reference}; closest to it is best, TV = total-variation distance to it)"
    fig.update_layout(title=title, xaxis=dict(title="predicted class", type="category"),
                      yaxis=dict(title="method", autorange="reversed", type="category"))
    return fig
