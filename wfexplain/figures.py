"""Figures: plotly builders for the dashboard, matplotlib builders for papers.

Plotly builders return :class:`plotly.graph_objects.Figure`. Matplotlib builders return a
:class:`matplotlib.figure.Figure` created directly (never through ``pyplot``), so no global
state is touched and figures can be built from several threads (Streamlit sessions) at
once; :func:`figure_bytes` renders one to PNG, SVG or PDF. Every axis is labelled and the
direction of a metric is stated where it has one. This module never imports streamlit.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure

from . import analysis

FIGURE_FORMATS = ("png", "svg", "pdf")
FORGOTTEN_COLOR = "#d62728"
ORIGINAL_COLOR = "#7f7f7f"
FILTERED_COLOR = "#1f77b4"


def to_numpy(x) -> np.ndarray:
    """A NumPy view/copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def forget_list(forget) -> list[int]:
    """A forget set (None, an index, a sequence or a tensor of indices) as sorted unique class indices."""
    if forget is None:
        return []
    if isinstance(forget, torch.Tensor):
        forget = forget.tolist()
    if isinstance(forget, int | np.integer):
        return [int(forget)]
    return sorted({int(c) for c in forget})


def _check_names(class_names: Sequence[str], n: int, what: str) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"{what} has {n} classes but {len(names)} class names were given")
    return names


# ================================================================ plotly (dashboard)


def memory_heatmap(alpha, class_names: Sequence[str], order=None, threshold: float | None = None,
                   title: str = "Memory matrix (alpha: 0 = component switched off for that class)") -> go.Figure:
    """Heatmap of one memory matrix ``[N, K]``: classes on y, components on x.

    Args:
        alpha: the matrix (tensor or array).
        class_names: N names.
        order: optional permutation of the K components (see
            :func:`wfexplain.analysis.order_components`); x labels keep the original indices.
        threshold: if set, show the binary matrix "off" (``alpha < threshold``) / "on"
            instead of the values (hover still shows alpha).
    """
    a = to_numpy(alpha).astype(float)
    names = _check_names(class_names, a.shape[0], "alpha")
    perm = np.arange(a.shape[1]) if order is None else to_numpy(order).astype(int)
    a = a[:, perm]
    x = [str(i) for i in perm]
    common = dict(x=x, y=names, customdata=a, xgap=0, ygap=1,
                  hovertemplate="class %{y}<br>component %{x}<br>alpha %{customdata:.3f}<extra></extra>")
    if threshold is None:
        trace = go.Heatmap(z=a, zmin=0.0, zmax=1.0, colorscale="Viridis",
                           colorbar=dict(title=dict(text="alpha<br>(0 = off)")), **common)
    else:
        off = (a < threshold).astype(float)
        trace = go.Heatmap(z=off, zmin=0.0, zmax=1.0, colorscale=[[0, "#f0f0f0"], [1, FORGOTTEN_COLOR]],
                           colorbar=dict(title=dict(text=f"alpha < {threshold:g}"), tickvals=[0, 1],
                                         ticktext=["on", "off"]), **common)
    fig = go.Figure(trace)
    xtitle = "component index" + ("" if order is None else " (reordered)")
    fig.update_layout(title=title, xaxis=dict(title=xtitle, type="category"),
                      yaxis=dict(title="filter of class (row = class forgotten)", autorange="reversed", type="category"))
    return fig


def accuracy_bars(original, filtered, class_names: Sequence[str], forget) -> go.Figure:
    """Grouped bars of per-class accuracy, original vs filtered; forgotten classes shaded red.

    On forgotten classes the filtered accuracy should drop (lower is better); on the
    others it should stay at the original level (higher is better).
    """
    orig, filt = to_numpy(original).astype(float), to_numpy(filtered).astype(float)
    names = _check_names(class_names, len(orig), "original")
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
        title="Per-class accuracy: forgotten classes (red) lower is better, retained classes higher is better",
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
    names = _check_names(class_names, a.shape[0], "the confusion matrix")
    diff = b - a
    lim = float(np.abs(diff).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=diff, x=names, y=names, zmin=-lim, zmax=lim, zmid=0.0, colorscale="RdBu", reversescale=True,
        colorbar=dict(title=dict(text="filtered − original")),
        hovertemplate="true %{y}<br>predicted %{x}<br>change %{z:+.3g}<extra></extra>",
    ))
    fig.update_layout(title="Confusion shift after filtering (filtered − original)",
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
    names = [str(c) for c in class_names]
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
    fig.update_layout(title=title)
    return fig


def similarity_heatmap(sim, class_names: Sequence[str], order=None) -> go.Figure:
    """Class-similarity heatmap (cosine of suppression vectors, 1 = same components off),
    rows and columns permuted by ``order`` (e.g. a dendrogram's leaves)."""
    s = to_numpy(sim).astype(float)
    names = _check_names(class_names, s.shape[0], "the similarity matrix")
    perm = np.arange(s.shape[0]) if order is None else to_numpy(order).astype(int)
    s = s[np.ix_(perm, perm)]
    labels = [names[i] for i in perm]
    fig = go.Figure(go.Heatmap(
        z=s, x=labels, y=labels, zmin=min(0.0, float(s.min())), zmax=1.0, colorscale="Viridis",
        colorbar=dict(title=dict(text="cosine")),
        hovertemplate="%{y} vs %{x}<br>similarity %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title="Class similarity of the filters (cosine of 1 − alpha; 1 = same components switched off)",
                      xaxis=dict(title="class", type="category"),
                      yaxis=dict(title="class", autorange="reversed", type="category"))
    return fig


def sparsity_bars(sparsity: Mapping[str, Sequence[float]], class_names: Sequence[str],
                  threshold: float | None = None) -> go.Figure:
    """Grouped bars: per class, the fraction of components its filter switches off, one
    trace per layer (output of :func:`wfexplain.analysis.sparsity`)."""
    names = [str(c) for c in class_names]
    fig = go.Figure()
    for layer, values in sparsity.items():
        vals = to_numpy(values).astype(float)
        _check_names(names, len(vals), f"layer {layer!r}")
        fig.add_trace(go.Bar(name=layer, x=names, y=vals,
                             hovertemplate=f"{layer}<br>%{{x}}: %{{y:.1%}} off<extra></extra>"))
    cond = "alpha < threshold" if threshold is None else f"alpha < {threshold:g}"
    fig.update_layout(barmode="group", title=f"Sparsity of each class's filter (fraction of components with {cond})",
                      xaxis=dict(title="forgotten class (filter)", type="category"),
                      yaxis=dict(title="fraction of components switched off", range=[0, 1], tickformat=".0%"),
                      legend=dict(title="layer"))
    return fig


def component_profile_bar(values, class_names: Sequence[str], title: str = "Component profile") -> go.Figure:
    """One component's alpha in each class's filter (low bar = switched off when that class is forgotten)."""
    vals = to_numpy(values).astype(float)
    names = _check_names(class_names, len(vals), "the profile")
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=[FORGOTTEN_COLOR if v < 0.5 else FILTERED_COLOR for v in vals],
                           hovertemplate="%{x}<br>alpha %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{title} (alpha: 0 = off for that class's filter, 1 = kept)",
                      xaxis=dict(title="filter of class", type="category"),
                      yaxis=dict(title="alpha", range=[0, 1.05]))
    return fig


# ================================================================ matplotlib (papers)


def memory_figure(memory, class_names: Sequence[str], layers: Sequence[str] | None = None,
                  order_mode: str = "original", cmap: str = "viridis", width: float = 7.0) -> Figure:
    """Memory matrices for a paper: one row of axes per layer, one shared colour scale.

    Each panel shows ``alpha`` ``[N, K_l]`` with classes (names) on y and components on x,
    ordered by ``order_mode`` (see :func:`wfexplain.analysis.order_components`). All
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
        image = ax.imshow(values, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0, cmap=cmap)
        k = values.shape[1]
        ax.set_title(f"{layer}  (K = {k})", fontsize=8, loc="left")
        ax.set_yticks(range(n), names, fontsize=max(4, 8 - n // 10))
        ax.set_ylabel("filter of class", fontsize=7)
        ax.set_xlabel(f"component{'' if order_mode == 'original' else ' position'}{order_label[order_mode]}", fontsize=7)
        if order_mode != "original" and k <= 32:
            ax.set_xticks(range(k), [str(int(i)) for i in perm], fontsize=5)
        ax.tick_params(axis="x", labelsize=6)
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
    axes[0].set_title("input", fontsize=8)
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
    embedded in SVG/PDF, so the same figure gives the same bytes)."""
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; choose one of {', '.join(FIGURE_FORMATS)}")
    if not isinstance(fig, Figure):
        raise TypeError(f"figure_bytes renders matplotlib figures, got {type(fig).__name__} "
                        "(plotly figures: use fig.to_html or fig.to_json)")
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


# ================================================================ plotly (Compare page: benchmark results)


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
            from :func:`wfexplain.comparison.pareto_front`; ringed and connected by a dashed line.
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
    (e.g. total variation to it, :func:`wfexplain.comparison.prediction_distances`) are added to
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
