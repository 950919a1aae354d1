"""What a deletion measurement (:mod:`wfexplain.explain.deletion`) reports beyond its curves: the means over classes,
each class's nearest class by memory, and the compact copy kept in a manifest (``wfexplain explanations --record``)
and in a ``benchmark.json`` (its ``explanations`` section)."""

from __future__ import annotations

import math

import numpy as np

RANKINGS = ("memory", "activation", "grad_x_activation", "random")  # how components are ranked (deletion.py)


def summarize(per_class: dict) -> dict:
    """Means over classes of each ranking's AUCs and of the agreements; ``memory_beats_random``: the classes whose
    memory selectivity exceeds the random draws' mean."""
    rows = list(per_class.values())
    if not rows:  # sets only: no class to average over
        none = {k: math.nan for k in ("class_drop", "others_drop", "selectivity")}
        agree = {k: math.nan for k in ("spearman", "top_overlap", "top_chance")}
        return {**{r: dict(none) for r in RANKINGS}, "memory_beats_random": 0,
                "agreement": {r: dict(agree) for r in ("activation", "grad_x_activation")}}
    out: dict = {r: {k: float(np.mean([row["rankings"][r]["auc"][k] for row in rows]))
                     for k in ("class_drop", "others_drop", "selectivity")} for r in RANKINGS}
    def finite_mean(v: list) -> float:  # NaN where none is finite (a constant ranking has no Spearman rho)
        return float(np.mean([x for x in v if math.isfinite(x)])) if any(map(math.isfinite, v)) else math.nan

    out["agreement"] = {r: {k: finite_mean([row["agreement"][r][k] for row in rows])
                            for k in ("spearman", "top_overlap", "top_chance")} for r in ("activation", "grad_x_activation")}
    out["memory_beats_random"] = sum(row["rankings"]["memory"]["auc"]["selectivity"] >
                                     row["rankings"]["random"]["auc"]["selectivity"] for row in rows)
    return out


def nearest_class(memory) -> dict:
    """For each class, the other class whose suppression vector is most similar (cosine,
    :func:`~wfexplain.explain.analysis.class_similarity`) and that similarity; the caller judges known groups."""
    from .analysis import class_similarity  # torch and scipy: only here (the tables and figures need neither)

    best = class_similarity(memory).fill_diagonal_(-math.inf).max(1)  # a fresh tensor
    return {"nearest": best.indices.tolist(), "similarity": best.values.tolist()}


def compact(report: dict) -> dict:
    """The report without its per-fraction curves and per-layer Spearman values (what ``--record`` stores)."""
    def slim(row: dict) -> dict:
        return {**row, "rankings": {r: {"auc": v["auc"]} for r, v in row["rankings"].items()},
                "agreement": {r: {k: v for k, v in a.items() if k != "spearman_per_layer"}
                              for r, a in row["agreement"].items()}}

    return {**report, "classes": {c: slim(r) for c, r in report["classes"].items()},
            "sets": {s: slim(r) for s, r in report["sets"].items()}}
