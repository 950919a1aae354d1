"""Read and compare benchmark results: the tables and sets behind the dashboard's Compare page.

``wfexplain benchmark`` writes ``<checkpoint>/benchmark.json`` (:func:`wfexplain.benchmark.runner.run_benchmark`).
This module turns it into pandas tables with no Streamlit involved:

* :func:`read_benchmark` loads and checks the file (clear errors naming the file and the key).
* :func:`comparison_table` is methods x metrics, ``(metric, "mean" | "std")`` columns, for the
  mean over the benchmarked single classes, over the sets of one size, or for one forget set.
* :func:`gap_to_retrain` is each method's mean minus the Retrain oracle's, per metric.
* :func:`best_per_column` picks, per metric, the best *unlearning method*: the closest to Retrain (time:
  the fastest; :attr:`~wfexplain.benchmark.catalogue.Metric.versus_retrain`); ``"original"`` (no
  unlearning) and ``"retrain"`` (the oracle everything is measured against) are references,
  not contestants.
* :func:`pareto_front` finds the methods no other method beats on forget quality (↑), retain
  accuracy (↑) and time (↓) at once.

Missing metrics and NaN (e.g. ``"original"`` has no time) are kept as NaN and never win.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import within
from ..methods import method_label, methods
from .catalogue import BENCHMARK_FILE, METRICS, method_keys

FILENAME = BENCHMARK_FILE
REFERENCES = tuple(methods("reference"))  # shown, but never "best": no unlearning, and the oracle
REQUIRED_KEYS = ("class_names", "forget_classes", "methods", "per_set")
STATS = ("mean", "std")
__all__ = ["method_label"]  # re-exported for the pages


def is_percent(metric: str) -> bool:
    """Whether a metric is a fraction in [0, 1] shown as a percentage (its unit is ``%``)."""
    return metric in METRICS and METRICS[metric].percent


# ---------------------------------------------------------------- reading


def benchmark_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file, else ``<path>/benchmark.json`` (a checkpoint directory; ``ValueError`` if a
    symlink leads that file out of it)."""
    p = Path(path).expanduser()
    if p.is_dir():
        within(p, p / FILENAME)
        return p / FILENAME
    return p


def read_benchmark(path: str | os.PathLike) -> dict:
    """Load a ``benchmark.json`` (or the one in a checkpoint directory) and check its shape.

    Raises:
        FileNotFoundError: the file does not exist (the message names the command that writes it).
        ValueError: not JSON, not an object, or a required key is missing or malformed (named).
    """
    file = benchmark_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: create it with `wfexplain benchmark --checkpoint {file.parent}`")
    try:
        bench = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    if isinstance(bench, dict) and "per_set" not in bench and isinstance(bench.get("per_class"), dict):
        bench["per_set"] = bench.pop("per_class")  # written before forget sets: single classes, keyed alike
        bench.setdefault("protocol", "earlier (before the fair-tuning protocol of docs/benchmark.md)")
    check_benchmark(bench, str(file))
    return bench


def weights_mismatch(bench: Mapping, files: Mapping[str, str]) -> list[str]:
    """The weight files whose SHA-256 in ``bench["weights"]`` differs from ``files`` (a checkpoint's manifest);
    empty when they match or the benchmark predates the record."""
    recorded = bench.get("weights") or {}
    return [name for name, digest in recorded.items() if name in files and files[name] != digest]


def check_benchmark(bench, source: str = "the benchmark") -> dict:
    """Raise :class:`ValueError` naming ``source`` and the key when ``bench`` lacks the schema's essentials."""
    if not isinstance(bench, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(bench).__name__}")
    for key in REQUIRED_KEYS:
        if key not in bench:
            raise ValueError(f"{source} has no {key!r} key (expected the output of `wfexplain benchmark`)")
    for key in ("methods", "per_set"):
        if not isinstance(bench[key], dict):
            raise ValueError(f"{source}: {key!r} must be an object, got {type(bench[key]).__name__}")
    if not bench["methods"]:
        raise ValueError(f"{source}: 'methods' is empty")
    for method, metrics in bench["methods"].items():
        if not isinstance(metrics, dict):
            raise ValueError(f"{source}: 'methods'.{method!r} must map metric names to {{mean, std}}")
    for c, entries in bench["per_set"].items():
        if not isinstance(entries, dict):
            raise ValueError(f"{source}: 'per_set'.{c!r} must map methods to their results")
    if not isinstance(bench["class_names"], list) or not isinstance(bench["forget_classes"], list):
        raise ValueError(f"{source}: 'class_names' and 'forget_classes' must be lists")
    return bench


# ---------------------------------------------------------------- tables


def as_float(v) -> float:
    """``float(v)``, or NaN for None and anything not a number (JSON null, strings)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _stat(entry, stat: str) -> float:
    if isinstance(entry, Mapping):
        return as_float(entry.get(stat))
    return as_float(entry) if stat == "mean" else math.nan  # a bare number: a mean without spread


def order_methods(names) -> list[str]:
    """The registry's order (references, ours, baselines), then any others (as given)."""
    known = [m for m in method_keys() if m in names]
    return known + [m for m in names if m not in known]


def benchmarked_sets(bench: dict) -> list[str]:
    """The keys (``"0"``, ``"0-6"``) of the forget sets with results, in ``forget_sets`` order."""
    per = bench.get("per_set", {})
    listed = [s if isinstance(s, str) else "-".join(map(str, s if isinstance(s, list) else [s]))
              for s in bench.get("forget_sets") or bench.get("forget_classes", [])]
    listed = [k for k in dict.fromkeys(listed) if k in per]
    return listed + [k for k in per if k not in listed]


def benchmarked_classes(bench: dict) -> list[int]:
    """The single forget classes with results."""
    return [int(k) for k in benchmarked_sets(bench) if k.isdigit()]


def comparison_table(bench: dict, forget: int | str | None = None, size: int | None = None) -> pd.DataFrame:
    """Methods x metrics: rows are methods, columns ``(metric, "mean" | "std")``.

    Args:
        bench: a ``benchmark.json`` dict.
        forget: a forget set's key (``"0-6"``) or a class: its results over seeds (``bench["per_set"][key]``).
        size: with ``forget`` None, the mean over the sets of that size (``bench["by_size"]``); None: over the
            single classes (``bench["methods"]``).

    Columns follow :data:`~wfexplain.benchmark.catalogue.METRICS` (every one, NaN where a method lacks it),
    then any other metric found. Raises :class:`KeyError` for a set or size that was not benchmarked.
    """
    if forget is None and size is None:
        entries = bench["methods"]
    elif forget is None:
        by_size = bench.get("by_size") or {}
        if str(size) not in by_size:
            raise KeyError(f"no forget sets of {size} classes were benchmarked")
        entries = by_size[str(size)]
    else:
        per = bench.get("per_set", {})
        if str(forget) not in per:
            raise KeyError(f"forget set {forget} was not benchmarked (benchmarked: "
                           f"{', '.join(benchmarked_sets(bench)) or 'none'})")
        entries = {m: (e.get("metrics", {}) if isinstance(e, Mapping) else {}) for m, e in per[str(forget)].items()}
    methods = order_methods(list(entries))
    found = [k for m in methods for k in entries[m] if k not in METRICS]
    metrics = [*METRICS, *dict.fromkeys(found)]
    data = [[_stat(entries[m].get(k), s) for k in metrics for s in STATS] for m in methods]
    columns = pd.MultiIndex.from_product([metrics, STATS], names=["metric", "stat"])
    return pd.DataFrame(data, index=pd.Index(methods, name="method"), columns=columns, dtype=float)


def means(table: pd.DataFrame) -> pd.DataFrame:
    """The ``mean`` half of a :func:`comparison_table` (a plain methods x metrics table passes through)."""
    if isinstance(table.columns, pd.MultiIndex):
        return table.xs("mean", axis=1, level="stat")
    return table


def gap_to_retrain(table: pd.DataFrame) -> pd.DataFrame:
    """Each method's mean minus the Retrain oracle's, per metric (Retrain's own row is 0).

    All NaN when the table has no ``"retrain"`` row; NaN where either side is missing.
    """
    m = means(table)
    return m - m.loc["retrain"] if "retrain" in m.index else m * math.nan


TIE = 1e-9  # values this close count as equal


def best_per_column(table: pd.DataFrame) -> dict[str, list[str]]:
    """Per metric, the best unlearning method(s): the closest to Retrain, the oracle every method imitates.

    Without a Retrain row (or for a metric not read against Retrain, the time) the metric's
    direction decides instead. ``"original"`` and ``"retrain"`` are not contestants, nor are NaN
    values or metrics of unknown direction. Every method tied for best is listed (in table order).
    """
    m = means(table)
    reference = m.loc["retrain"] if "retrain" in m.index else None
    m = m.drop(index=[r for r in REFERENCES if r in table.index])
    best = {}
    for metric in m.columns:
        if metric not in METRICS:
            continue
        col = m[metric].dropna()
        if col.empty:
            continue
        target = reference[metric] if reference is not None and METRICS[metric].versus_retrain else math.nan
        by_direction = col if METRICS[metric].higher_is_better else -col
        score = by_direction if math.isnan(target) else -(col - target).abs()
        best[metric] = [str(k) for k, v in score.items() if v >= score.max() - TIE]
    return best


def pareto_front(points: Sequence[tuple[float, float, float]]) -> list[int]:
    """Indices (sorted) of the points not dominated on (forget quality ↑, retain accuracy ↑, time ↓).

    A point is dominated when another is at least as good on all three and strictly better on
    one; equal points do not dominate each other. A point with a NaN coordinate is never on the
    front and dominates nothing.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 3) * np.array([1.0, 1.0, -1.0])  # all "higher is better"
    ok = ~np.isnan(pts).any(axis=1)
    front = []
    for i in np.flatnonzero(ok):
        others = pts[ok]
        dominated = np.any(np.all(others >= pts[i], axis=1) & np.any(others > pts[i], axis=1))
        if not dominated:
            front.append(int(i))
    return front


def tradeoff_points(table: pd.DataFrame, exclude: Sequence[str] = ("original",)) -> pd.DataFrame:
    """Per method: ``forget_quality`` (1 - forget acc. test), ``retain_accuracy`` (test), ``seconds``
    and ``pareto`` (on the front of :func:`pareto_front` among these rows)."""
    m = means(table)
    m = m.drop(index=[r for r in exclude if r in m.index])
    col = lambda k: m[k] if k in m.columns else pd.Series(math.nan, index=m.index)  # noqa: E731
    out = pd.DataFrame({"forget_quality": 1.0 - col("forget_accuracy_test"),
                        "retain_accuracy": col("retain_accuracy_test"), "seconds": col("seconds")}, index=m.index)
    front = set(pareto_front(list(out.itertuples(index=False, name=None))))
    out["pareto"] = [i in front for i in range(len(out))]
    return out


def prediction_distances(predictions: Mapping[str, Sequence[float]], reference: str = "retrain") -> dict[str, float]:
    """Total-variation distance ``0.5 * sum |p - p_ref|`` of each method's prediction distribution
    to the reference's (0 = same, 1 = disjoint); empty without the reference."""
    if reference not in predictions:
        return {}
    ref = np.asarray(predictions[reference], dtype=float)
    out = {}
    for m, values in predictions.items():
        p = np.asarray(values, dtype=float)
        out[m] = 0.5 * float(np.abs(p - ref).sum()) if p.shape == ref.shape else math.nan
    return out


# ---------------------------------------------------------------- display


def format_value(metric: str, value: float, signed: bool = False) -> str:
    """A metric's value as the tables show it: percentages with one decimal, times of 100 s and more as whole seconds
    ("4087", not "4.09e+03"), anything else with three significant digits; ``signed`` for gaps."""
    if is_percent(metric):
        return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"
    if metric == "seconds" and abs(value) >= 100:
        return f"{value:+.0f}" if signed else f"{value:.0f}"
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def column_header(metric: str) -> str:
    """``"Forget acc. (test) (%) ↓"``: the label, the unit when a percentage, the direction arrow."""
    meta = METRICS.get(metric)
    if meta is None:
        return metric
    return f"{meta.label}{' (%)' if is_percent(metric) else ''} {meta.arrow}"


BEST_MARK = "★"


def formatted_table(table: pd.DataFrame) -> pd.DataFrame:
    """Display strings: ``"mean ± std [gap to Retrain]"`` with :data:`BEST_MARK` on each column's best (closest to
    Retrain; every tied method marked, with "(tie)").

    Rows are method labels (:func:`method_label`), columns :func:`column_header`; accuracies in
    % (gaps in percentage points); ``–`` where a value is missing.
    """
    m = means(table)
    std = table.xs("std", axis=1, level="stat") if isinstance(table.columns, pd.MultiIndex) else m * math.nan
    gap = gap_to_retrain(table)
    best = best_per_column(table)
    rows = {}
    for method in m.index:
        cells = {}
        for metric in m.columns:
            v = m.at[method, metric]
            if math.isnan(v):
                cells[column_header(metric)] = "–"
                continue
            s = std.at[method, metric]
            text = format_value(metric, v) + ("" if math.isnan(s) else f" ± {format_value(metric, s)}")
            g = gap.at[method, metric]
            if method not in REFERENCES and not math.isnan(g):
                text += f" [{format_value(metric, g, signed=True)}]"
            if method in best.get(metric, ()):
                text += f" {BEST_MARK}" + (" (tie)" if len(best[metric]) > 1 else "")
            cells[column_header(metric)] = text
        rows[method_label(method)] = cells
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
