"""Plotly figures for the dashboard's live views (memory heatmaps, accuracy, confusion, prediction flow).

Every axis is labelled and the direction of a metric is stated where it has one. Class names are data (image
folder names, manifests): every one, and every other label from data, goes through
:func:`~wfexplain.figures.common.plotly_text` before plotly sees it, so no markup in a name is rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..forget import classes as forget_list
from .common import (
    FILTERED_COLOR,
    FORGOTTEN_COLOR,
    KEPT_COLOR,
    MEMORY_COLORSCALE,
    ORIGINAL_COLOR,
    _check_names,
    _plotly_names,
    plotly_text,
    to_numpy,
    wrapped_title,
)


def memory_heatmap(alpha, class_names: Sequence[str], order=None, threshold: float | None = None,
                   title: str = "Memory matrix (alpha: 0 = component switched off for that class)") -> go.Figure:
    """Heatmap of one memory matrix ``[N, K]``: classes on y, components on x.

    Args:
        alpha: the matrix (tensor or array).
        class_names: N names.
        order: optional permutation of the K components (see
            :func:`wfexplain.explain.analysis.order_components`); x labels keep the original indices.
        threshold: if set, show the binary matrix "off" (``alpha < threshold``) / "on"
            instead of the values (hover still shows alpha).
    """
    a = to_numpy(alpha).astype(float)
    names = _plotly_names(class_names, a.shape[0], "alpha")
    perm = np.arange(a.shape[1]) if order is None else to_numpy(order).astype(int)
    a = a[:, perm]
    x = [str(i) for i in perm]
    common = dict(x=x, y=names, customdata=a, xgap=0, ygap=1,
                  hovertemplate="class %{y}<br>component %{x}<br>alpha %{customdata:.3f}<extra></extra>")
    if threshold is None:
        trace = go.Heatmap(z=a, zmin=0.0, zmax=1.0, colorscale=MEMORY_COLORSCALE,
                           colorbar=dict(title=dict(text="alpha<br>(0 = off)")), **common)
    else:
        off = (a < threshold).astype(float)  # two colours, and a colour bar of two blocks (no gradient)
        two = [[0, KEPT_COLOR], [0.5, KEPT_COLOR], [0.5, FORGOTTEN_COLOR], [1, FORGOTTEN_COLOR]]
        trace = go.Heatmap(z=off, zmin=0.0, zmax=1.0, colorscale=two,
                           colorbar=dict(title=dict(text=f"alpha < {threshold:g}"), tickvals=[0.25, 0.75],
                                         ticktext=["on (kept)", "off"]), **common)
    fig = go.Figure(trace)
    xtitle = "component index" + ("" if order is None else " (reordered)")
    fig.update_layout(**wrapped_title(title, 100), xaxis=dict(title=xtitle, type="category"),
                      yaxis=dict(title="filter of class (row = class forgotten)", autorange="reversed", type="category"))
    return fig


def accuracy_bars(original, filtered, class_names: Sequence[str], forget) -> go.Figure:
    """Grouped bars of per-class accuracy, original vs filtered; forgotten classes shaded red.

    On forgotten classes the filtered accuracy should drop (lower is better); on the
    others it should stay at the original level (higher is better).
    """
    orig, filt = to_numpy(original).astype(float), to_numpy(filtered).astype(float)
    names = _plotly_names(class_names, len(orig), "original")
    if len(filt) != len(orig):
        raise ValueError(f"original has {len(orig)} classes, filtered {len(filt)}")
    forgotten = set(forget_list(forget))
    labels = [f"{n} (forgotten)" if i in forgotten else n for i, n in enumerate(names)]
    colors = [FORGOTTEN_COLOR if i in forgotten else FILTERED_COLOR for i in range(len(names))]
    fig = go.Figure([
        go.Bar(name="original", x=labels, y=orig, marker_color=ORIGINAL_COLOR,
               hovertemplate="%{x}<br>original accuracy %{y:.3f}<extra></extra>"),
        go.Bar(name="filtered", x=labels, y=filt, marker_color=colors,
               hovertemplate="%{x}<br>filtered accuracy %{y:.3f}<extra></extra>"),
    ])
    for i in sorted(forgotten):
        if 0 <= i < len(names):
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor=FORGOTTEN_COLOR, opacity=0.08, line_width=0, layer="below")
    fig.update_layout(
        barmode="group",
        **wrapped_title("Per-class accuracy: forgotten classes (red) lower is better, retained classes higher is better", 100),
        xaxis=dict(title="test class", type="category"),
        yaxis=dict(title="accuracy", range=[0, 1.05], tickformat=".0%"),
        legend=dict(title="model"),
    )
    return fig


def confusion_shift(cm_original, cm_filtered, class_names: Sequence[str]) -> go.Figure:
    """Heatmap of ``cm_filtered - cm_original`` (rows = true class, columns = predicted),
    diverging colours centred on 0: red = more predictions there after filtering."""
    a, b = to_numpy(cm_original).astype(float), to_numpy(cm_filtered).astype(float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"confusion matrices must be square and of equal shape, got {a.shape} and {b.shape}")
    names = _plotly_names(class_names, a.shape[0], "the confusion matrix")
    diff = b - a
    lim = float(np.abs(diff).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=diff, x=names, y=names, zmin=-lim, zmax=lim, zmid=0.0, colorscale="RdBu", reversescale=True,
        colorbar=dict(title=dict(text="filtered − original")),
        hovertemplate="true %{y}<br>predicted %{x}<br>change %{z:+.3g}<extra></extra>",
    ))
    fig.update_layout(**wrapped_title("Confusion shift after filtering (filtered − original)"),
                      xaxis=dict(title="predicted class", type="category"),
                      yaxis=dict(title="true class", autorange="reversed", type="category"))
    return fig


def prediction_flow(true_labels, preds, class_names: Sequence[str], forget) -> go.Figure:
    """Sankey diagram: where the test images of the forgotten classes go under the filter.

    Left nodes: forgotten true classes; right nodes: predicted classes; link width: image
    count. Flows into the true class are correct predictions (fewer is better).
    """
    y, p = to_numpy(true_labels).astype(int).ravel(), to_numpy(preds).astype(int).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    names = [plotly_text(c) for c in class_names]
    sources = [c for c in forget_list(forget) if np.any(y == c)]
    targets = sorted({int(v) for v in p[np.isin(y, sources)]})
    n_src = len(sources)
    node_labels = [f"true: {names[c]}" for c in sources] + [f"predicted: {names[c]}" for c in targets]
    node_colors = [FORGOTTEN_COLOR] * n_src + [FORGOTTEN_COLOR if c in sources else FILTERED_COLOR for c in targets]
    src, tgt, val, link_colors = [], [], [], []
    for i, c in enumerate(sources):
        for j, t in enumerate(targets):
            count = int(np.sum((y == c) & (p == t)))
            if count:
                src.append(i)
                tgt.append(n_src + j)
                val.append(count)
                link_colors.append("rgba(214,39,40,0.45)" if t == c else "rgba(31,119,180,0.35)")
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node=dict(label=node_labels, color=node_colors, pad=12, thickness=16),
        link=dict(source=src, target=tgt, value=val, color=link_colors),
    ))
    title = "Predictions for images of forgotten classes (flow back to the true class: lower is better)"
    if not sources:
        title += " — no images of the forgotten classes"
    fig.update_layout(**wrapped_title(title))
    return fig


def similarity_heatmap(sim, class_names: Sequence[str], order=None) -> go.Figure:
    """Class-similarity heatmap (cosine of suppression vectors, 1 = same components off),
    rows and columns permuted by ``order`` (e.g. a dendrogram's leaves)."""
    s = to_numpy(sim).astype(float)
    names = _plotly_names(class_names, s.shape[0], "the similarity matrix")
    perm = np.arange(s.shape[0]) if order is None else to_numpy(order).astype(int)
    s = s[np.ix_(perm, perm)]
    labels = [names[i] for i in perm]
    fig = go.Figure(go.Heatmap(
        z=s, x=labels, y=labels, zmin=min(0.0, float(s.min())), zmax=1.0, colorscale="Viridis",
        colorbar=dict(title=dict(text="cosine")),
        hovertemplate="%{y} vs %{x}<br>similarity %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(**wrapped_title("Class similarity of the filters (cosine of 1 − alpha; 1 = same components switched off)"),
                      xaxis=dict(title="class", type="category"),
                      yaxis=dict(title="class", autorange="reversed", type="category"))
    return fig


def sparsity_bars(sparsity: Mapping[str, Sequence[float]], class_names: Sequence[str],
                  threshold: float | None = None) -> go.Figure:
    """Grouped bars: per class, the fraction of components its filter switches off, one
    trace per layer (output of :func:`wfexplain.explain.analysis.sparsity`)."""
    names = [plotly_text(c) for c in class_names]
    fig = go.Figure()
    for layer, values in sparsity.items():
        vals = to_numpy(values).astype(float)
        _check_names(names, len(vals), f"layer {layer!r}")
        shown = plotly_text(layer)
        fig.add_trace(go.Bar(name=shown, x=names, y=vals,
                             hovertemplate=f"{shown}<br>%{{x}}: %{{y:.1%}} off<extra></extra>"))
    cond = "alpha < threshold" if threshold is None else f"alpha < {threshold:g}"
    fig.update_layout(barmode="group", **wrapped_title(f"Sparsity of each class's filter (fraction of components with {cond})"),
                      xaxis=dict(title="forgotten class (filter)", type="category"),
                      yaxis=dict(title="fraction of components switched off", range=[0, 1], tickformat=".0%"),
                      legend=dict(title="layer"))
    return fig


def component_profile_bar(values, class_names: Sequence[str], title: str = "Component profile") -> go.Figure:
    """One component's alpha in each class's filter (low bar = switched off when that class is forgotten)."""
    vals = to_numpy(values).astype(float)
    names = _plotly_names(class_names, len(vals), "the profile")
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=[FORGOTTEN_COLOR if v < 0.5 else FILTERED_COLOR for v in vals],
                           hovertemplate="%{x}<br>alpha %{y:.3f}<extra></extra>"))
    fig.update_layout(**wrapped_title(f"{title} (alpha: 0 = off for that class's filter, 1 = kept)"),
                      xaxis=dict(title="filter of class", type="category"),
                      yaxis=dict(title="alpha", range=[0, 1.05]))
    return fig


# Directions of the metrics a run reports (wfexplain.engine / pipeline): shown in each panel's title.
_DIRECTION = {"loss": "↓", "val_forget": "↓ (forget accuracy)", "val_retain": "↑ (retain accuracy)"}


def history_curves(rows: Sequence[Mapping], stage: str) -> go.Figure:
    """Every metric one stage of a run reported (:mod:`wfexplain.history` rows), one line each, against the step."""
    rows = [r for r in rows if r.get("stage") == stage]
    metrics = sorted({k for r in rows for k in r} - {"stage", "step", "total"})
    fig = go.Figure()
    for name in metrics:
        points = [(r["step"], r[name]) for r in rows if name in r]
        fig.add_trace(go.Scatter(x=[s for s, _ in points], y=[v for _, v in points], mode="lines",
                                 name=plotly_text(f"{name} {_DIRECTION.get(name, '')}".strip()),
                                 hovertemplate=f"{plotly_text(name)}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"))
    total = max((r["total"] for r in rows), default=0)
    fig.update_layout(**wrapped_title(f"{plotly_text(stage)}: {len(rows)} reports over {total} steps"),
                      xaxis=dict(title="step", range=[0, total] if total else None), yaxis=dict(title="value"),
                      legend=dict(title="metric"))
    return fig
