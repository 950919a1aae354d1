"""Plotly figures for the dashboard's live views (memory heatmaps, accuracy, confusion, prediction flow).

Every axis is labelled and the direction of a metric is stated where it has one. Class names are data (image
folder names, manifests): every one, and every other label from data, goes through
:func:`~wfexplain.figures.common.plotly_text` before plotly sees it, so no markup in a name is rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..explain.sets import set_first
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


MOST_CLASSES = 40  # classes a per-class chart draws; past it, the forgotten ones and those that changed most


def classes_shown(change, forget, most: int = MOST_CLASSES) -> list[int]:
    """Which classes a per-class chart draws, in class order: all of them up to ``most``; else the forgotten classes
    and, to fill ``most``, the others with the largest ``|change|`` (NaN counts as none). A chart of 1,000 classes
    was 10.7 MB of JSON per rerun and unreadable."""
    c = np.nan_to_num(np.abs(to_numpy(change).astype(float)), nan=0.0)
    if len(c) <= most:
        return list(range(len(c)))
    forgotten = [i for i in forget_list(forget) if 0 <= i < len(c)][:most]
    rest = [int(i) for i in np.argsort(-c, kind="stable") if int(i) not in set(forgotten)]
    return sorted(forgotten + rest[: max(0, most - len(forgotten))])


def _of_all(shown: Sequence[int], total: int, what: str) -> str:
    return "" if len(shown) == total else f" — {what} ({len(shown)} of {total:,} classes)"


def accuracy_bars(original, filtered, class_names: Sequence[str], forget) -> go.Figure:
    """Grouped bars of per-class accuracy, original vs filtered; forgotten classes shaded red.

    On forgotten classes the filtered accuracy should drop (lower is better); on the
    others it should stay at the original level (higher is better). Past :data:`MOST_CLASSES` classes, only
    :func:`classes_shown` are drawn (the title says how many of how many).
    """
    orig, filt = to_numpy(original).astype(float), to_numpy(filtered).astype(float)
    names = _plotly_names(class_names, len(orig), "original")
    if len(filt) != len(orig):
        raise ValueError(f"original has {len(orig)} classes, filtered {len(filt)}")
    forgotten = set(forget_list(forget))
    shown = classes_shown(filt - orig, forget)
    labels = [f"{names[i]} (forgotten)" if i in forgotten else names[i] for i in shown]
    colors = [FORGOTTEN_COLOR if i in forgotten else FILTERED_COLOR for i in shown]
    fig = go.Figure([
        go.Bar(name="original", x=labels, y=orig[shown], marker_color=ORIGINAL_COLOR,
               hovertemplate="%{x}<br>original accuracy %{y:.3f}<extra></extra>"),
        go.Bar(name="filtered", x=labels, y=filt[shown], marker_color=colors,
               hovertemplate="%{x}<br>filtered accuracy %{y:.3f}<extra></extra>"),
    ])
    for j, i in enumerate(shown):
        if i in forgotten:
            fig.add_vrect(x0=j - 0.5, x1=j + 0.5, fillcolor=FORGOTTEN_COLOR, opacity=0.08, line_width=0, layer="below")
    title = ("Per-class accuracy: forgotten classes (red) lower is better, retained classes higher is better"
             + _of_all(shown, len(orig), "the forgotten classes and those whose accuracy changed most"))
    fig.update_layout(
        barmode="group",
        **wrapped_title(title, 100),
        xaxis=dict(title="test class", type="category"),
        yaxis=dict(title="accuracy", range=[0, 1.05], tickformat=".0%"),
        legend=dict(title="model"),
    )
    return fig


def confusion_shift(cm_original, cm_filtered, class_names: Sequence[str], forget=None) -> go.Figure:
    """Heatmap of ``cm_filtered - cm_original`` (rows = true class, columns = predicted),
    diverging colours centred on 0: red = more predictions there after filtering. Past :data:`MOST_CLASSES` classes,
    the rows and columns of :func:`classes_shown` (the forgotten classes and those with the largest total absolute
    shift, in class order)."""
    a, b = to_numpy(cm_original).astype(float), to_numpy(cm_filtered).astype(float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"confusion matrices must be square and of equal shape, got {a.shape} and {b.shape}")
    names = _plotly_names(class_names, a.shape[0], "the confusion matrix")
    diff = b - a
    shown = classes_shown(np.abs(diff).sum(0) + np.abs(diff).sum(1), forget)
    diff = diff[np.ix_(shown, shown)]
    lim = float(np.abs(diff).max()) if diff.size else 0.0
    labels = [names[i] for i in shown]
    fig = go.Figure(go.Heatmap(
        z=diff, x=labels, y=labels, zmin=-(lim or 1.0), zmax=lim or 1.0, zmid=0.0, colorscale="RdBu", reversescale=True,
        colorbar=dict(title=dict(text="filtered − original")),
        hovertemplate="true %{y}<br>predicted %{x}<br>change %{z:+.3g}<extra></extra>",
    ))
    title = "Confusion shift after filtering (filtered − original)" + _of_all(
        shown, a.shape[0], "the forgotten classes and those that shifted most")
    fig.update_layout(**wrapped_title(title),
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


# ---------------------------------------------------------------- a forget set, and many layers

SHARED_COLOR = "#e69f00"  # Okabe-Ito orange: apart from FORGOTTEN_COLOR in lightness too (colour-blind safe)
KEPT_BAR_COLOR = "#d9d9d9"


def _layer_height(n: int) -> int:
    """Pixels for a chart with one row per layer: 26 ViT layers stay legible, 4 CNN layers stay compact."""
    return int(min(1400, max(260, 140 + 24 * n)))


def set_memory_heatmap(alpha, gate, class_names: Sequence[str], forget, order=None, threshold: float | None = None,
                       title: str = "Memory matrix with the forget set's rows first") -> go.Figure:
    """:func:`memory_heatmap` of one layer with the forget set on top: a first row "combined gate of the set"
    (``g = prod_{c in S} alpha[c]``, on alpha's colour scale: 0 = switched off), then the set's classes (marked
    "(forgotten)"), a dashed line, then the retained classes. ``order`` permutes the components of every row."""
    a, g = to_numpy(alpha).astype(float), to_numpy(gate).astype(float).ravel()
    names = _check_names(class_names, a.shape[0], "alpha")
    if g.shape != (a.shape[1],):
        raise ValueError(f"the gate has {g.size} components, alpha {a.shape[1]}")
    chosen = {int(c) for c in forget_list(forget) if 0 <= int(c) < len(names)}
    rows = set_first(len(names), chosen)
    labels = ["∏ combined gate of the set"] + [f"{names[c]} (forgotten)" if c in chosen else names[c] for c in rows]
    fig = memory_heatmap(np.vstack([g[None], a[rows]]), labels, order=order, threshold=threshold, title=title)
    fig.add_hline(y=0.5, line=dict(color="white", width=3))
    if chosen and len(chosen) < len(names):
        fig.add_hline(y=len(chosen) + 0.5, line=dict(color="white", width=2, dash="dash"))
    fig.update_layout(height=max(300, 120 + 22 * len(labels)))
    return fig


def set_components_bars(rows: Sequence[Mapping], threshold: float | None = None, set_label: str = "the set") -> go.Figure:
    """Horizontal stacked bars, one row per layer (network order, top to bottom), each summing to 1: the fraction
    of the layer's ``K`` components the set switches off that are **unique** to it (red), **shared** with a
    retained class's filter (orange), and **kept** (grey); rows of
    :func:`wfexplain.explain.sets.set_components`. One bar per layer, three fixed colours, the counts on hover:
    legible for 4 layers or 26, unlike one colour per layer."""
    layers = [plotly_text(r["layer"]) for r in rows]
    k = np.array([int(r["components"]) for r in rows])
    fig = go.Figure()
    parts = (("unique", "unique to the set", FORGOTTEN_COLOR), ("shared", "shared with a retained class", SHARED_COLOR),
             ("kept", "kept (gate ≥ threshold)", KEPT_BAR_COLOR))
    for key, name, color in parts:
        n = np.array([int(r[key]) for r in rows])
        fig.add_trace(go.Bar(name=name, y=layers, x=n / np.maximum(k, 1), orientation="h", marker_color=color,
                             customdata=np.stack([n, k], axis=-1) if len(rows) else None,
                             hovertemplate=f"%{{y}}<br>{name}: %{{customdata[0]}} of %{{customdata[1]}} "
                                           "(%{x:.0%})<extra></extra>"))
    cond = "combined gate < threshold" if threshold is None else f"combined gate < {threshold:g}"
    fig.update_layout(barmode="stack", height=_layer_height(len(rows)),
                      **wrapped_title(f"Components {set_label} switches off ({cond}), per layer: unique to the set "
                                      "or shared with retained classes", 90),
                      xaxis=dict(title="fraction of the layer's components", range=[0, 1], tickformat=".0%"),
                      yaxis=dict(title="layer (network order)", autorange="reversed", type="category"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, traceorder="normal"))
    return fig


def sparsity_heatmap(sparsity: Mapping[str, Sequence[float]], class_names: Sequence[str],
                     threshold: float | None = None) -> go.Figure:
    """Heatmap layers (rows, network order) x classes (columns) of the fraction of components each class's filter
    switches off (output of :func:`wfexplain.explain.analysis.sparsity`), the value printed in each cell.

    Why a heatmap and not grouped bars (as before): grouped bars give every layer its own colour and
    plotly's palette repeats after 10, so with a ViT's 26 layers the legend no longer tells layers apart and the 260
    bars are slivers. Here layers sit on an axis (any number of them), one sequential single-hue scale (white to
    red, colour-blind safe; red = off, as in the on/off memory heatmap) codes the fraction, and the depth profile of
    a class reads down its column."""
    names = [plotly_text(c) for c in class_names]
    layers = list(sparsity)
    for layer in layers:
        _check_names(names, len(to_numpy(sparsity[layer])), f"layer {layer!r}")
    z = np.array([to_numpy(sparsity[layer]).astype(float) for layer in layers]).reshape(len(layers), len(names))
    top = float(z.max()) if z.size and z.max() > 0 else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=[plotly_text(layer) for layer in layers], zmin=0.0, zmax=top, colorscale="Reds",
        texttemplate="%{z:.0%}", textfont=dict(size=10), xgap=1, ygap=1,
        colorbar=dict(title=dict(text="fraction<br>off"), tickformat=".0%"),
        hovertemplate="%{y}<br>filter of %{x}: %{z:.1%} of components off<extra></extra>"))
    cond = "alpha < threshold" if threshold is None else f"alpha < {threshold:g}"
    fig.update_layout(height=_layer_height(len(layers)),
                      **wrapped_title(f"Sparsity of each class's filter per layer (fraction of components with {cond})"),
                      xaxis=dict(title="forgotten class (filter)", type="category"),
                      yaxis=dict(title="layer (network order)", autorange="reversed", type="category"))
    return fig
