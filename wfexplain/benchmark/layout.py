"""How the Compare page lays out a benchmark, with no Streamlit involved: metric tables by family that fit the page,
what the tables show (the mean over the sets of one size, or one forget set), the cost at parity and the tuning as
tables, and which images the A/B view compares (the benchmark's or the
dashboard's live subset, never mixed in one chart)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from ..methods import method_label
from .catalogue import FAMILIES, METRICS
from .comparison import as_float

# ---------------------------------------------------------------- tables that fit the page, by family

MAX_COLUMNS = 3  # metrics per table: with the method names about 110 characters, well inside a wide page
MAX_TABLE_CHARS = 115  # the bound :func:`text_width` of a formatted family table stays under (tests check it)
OTHER = "Other"  # the metrics of no family (e.g. an older benchmark's, or a custom one)


def _chunks(title: str, members: list[str]) -> list[tuple[str, list[str]]]:
    """``members`` in tables of at most :data:`MAX_COLUMNS`, as even as possible: "Title" alone, else "Title (1/2)"..."""
    if not members:
        return []
    n = math.ceil(len(members) / MAX_COLUMNS)
    size, extra = divmod(len(members), n)
    out, start = [], 0
    for i in range(n):
        stop = start + size + (i < extra)
        out.append((title if n == 1 else f"{title} ({i + 1}/{n})", members[start:stop]))
        start = stop
    return out


def metric_groups(metrics: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``(title, metrics)`` tables of at most :data:`MAX_COLUMNS` columns: one per family of
    :data:`~wfexplain.benchmark.catalogue.FAMILIES` (in that order, its metrics in the catalogue's order; a larger
    family split evenly into "Family (1/2)", "Family (2/2)"), then the metrics of no family as :data:`OTHER`
    tables (in the given order); families with none of ``metrics`` are dropped."""
    wanted = set(metrics)
    groups = []
    for family in FAMILIES:
        groups += _chunks(family, [k for k, m in METRICS.items() if m.family == family and k in wanted])
    return groups + _chunks(OTHER, [m for m in dict.fromkeys(metrics) if m not in METRICS])


def measured_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics (columns of a means table, or the ``metric`` level of a :func:`comparison_table`) with at least one
    value: an older benchmark lacks the newer metrics, and a column of dashes says nothing."""
    m = table.xs("mean", axis=1, level="stat") if isinstance(table.columns, pd.MultiIndex) else table
    return [str(k) for k in m.columns if m[k].notna().any()]


def text_width(table: pd.DataFrame) -> int:
    """A width estimate in characters: per column, index included, the longest of its header and cells, summed."""
    heads = [str(table.index.name or ""), *map(str, table.columns)]
    cols = [list(map(str, table.index)), *([str(v) for v in table[c]] for c in table.columns)]
    return sum(max([len(h), *map(len, col)]) for h, col in zip(heads, cols, strict=True))


# ---------------------------------------------------------------- what the tables show

MEAN = "all-"  # a choice "all-2": the mean over the sets of 2 classes (the CSV's forget_set label)
SIZE_NAMES = {1: "single classes", 2: "pairs", 3: "triples"}


def set_classes(key: str) -> tuple[int, ...]:
    """The classes of a forget set's key (``"0-6"`` -> ``(0, 6)``)."""
    return tuple(int(c) for c in str(key).split("-") if c.strip().isdigit())


def set_key(classes: Sequence[int]) -> str:
    """The key of a forget set (sorted unique classes joined by ``-``, as ``benchmark.json`` names them)."""
    return "-".join(map(str, sorted({int(c) for c in classes})))


def class_name(c: int, class_names: Sequence[str], limit: int = 40) -> str:
    """``"6: Shirt"``: a class's index and name on one line, cut to ``limit`` characters (plain text, not escaped)."""
    name = " ".join(str(class_names[c]).split()) if 0 <= c < len(class_names) else "?"
    return f"{c}: {name if len(name) <= limit else name[:limit] + '…'}"


def set_name(key: str, class_names: Sequence[str], limit: int = 40) -> str:
    """``"0: T-shirt + 6: Shirt"``: a forget set named by its classes (plain text: escape it before any markdown)."""
    return " + ".join(class_name(c, class_names, limit) for c in set_classes(key))


def table_choices(bench: Mapping, set_keys: Sequence[str]) -> list[str]:
    """What the tables can show: ``"all-1"``, ``"all-2"``... (the set sizes benchmarked, ``bench["by_size"]``; a file
    without it has the single classes' mean only), then every forget set's key."""
    sizes = sorted(int(s) for s in (bench.get("by_size") or {"1": None}) if str(s).isdigit())
    return [f"{MEAN}{s}" for s in sizes] + list(set_keys)


def table_args(choice: str) -> tuple[str | None, int | None]:
    """``(forget, size)`` for :func:`~wfexplain.benchmark.comparison.comparison_table` of a :func:`table_choices`
    entry (size None: the single classes' mean, ``bench["methods"]``)."""
    if choice.startswith(MEAN):
        size = int(choice[len(MEAN):])
        return None, None if size == 1 else size
    return choice, None


def choice_label(choice: str, set_keys: Sequence[str], class_names: Sequence[str]) -> str:
    """``"pairs (mean of 5)"`` or the forget set's name (:func:`set_name`; plain text)."""
    if not choice.startswith(MEAN):
        return set_name(choice, class_names)
    size = int(choice[len(MEAN):])
    count = sum(len(set_classes(k)) == size for k in set_keys)
    return f"{SIZE_NAMES.get(size, f'sets of {size} classes')} (mean of {count})"


def default_choice(forget: Sequence[int], choices: Sequence[str]) -> str:
    """The sidebar's forget set when benchmarked, else the first of its classes benchmarked alone, else the first
    single class, else the first choice (a mean)."""
    wanted = [set_key(forget)] + [str(int(c)) for c in forget] if forget else []
    singles = [c for c in choices if c.isdigit()]
    return next((c for c in wanted if c in choices), singles[0] if singles else choices[0])


# ---------------------------------------------------------------- cost at parity and tuning, as tables

ROUND, MEASURED, EXTRAPOLATED = ("WF's one round (every class, once)", "requests (sizes benchmarked)",
                                 "requests (sizes extrapolated from one class)")


def parity_parts(parity: Mapping) -> pd.DataFrame:
    """Methods (labels, fastest first) x :data:`ROUND`, :data:`MEASURED`, :data:`EXTRAPOLATED`: seconds to answer the
    requests of ``cost["parity"]``, split into WF's round (paid once) and the requests' own time."""
    rows = {}
    for m in sorted(parity.get("totals", {}), key=lambda m: as_float(parity["totals"][m])):
        sizes = parity.get("methods", {}).get(m, {}).values()
        split = [sum(as_float(v.get("seconds")) for v in sizes if bool(v.get("extrapolated")) is flag) for flag in (False, True)]
        once = as_float(parity.get("wf_round_seconds")) if m in ("wf", "wf_removed") else 0.0
        rows[method_label(m)] = {ROUND: once, MEASURED: split[0], EXTRAPOLATED: split[1]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=[ROUND, MEASURED, EXTRAPOLATED]).rename_axis("method")


def parity_table(cost: Mapping) -> pd.DataFrame:
    """Per method (labels, fastest first): the total seconds at parity, each size's requests (``"45 × 2 classes"``
    columns; ``extrapolated`` sizes listed), one request of one class, and the tuning's seconds."""
    parity = cost.get("parity") or {}
    requests = parity.get("requests", {})
    rows = {}
    for m, total in sorted(parity.get("totals", {}).items(), key=lambda x: as_float(x[1])):
        sizes = parity.get("methods", {}).get(m, {})
        row: dict[str, float | str] = {"total (s) ↓": as_float(total)}
        row.update({f"{k} × {s} class{'es' if s != '1' else ''} (s)": as_float(sizes.get(s, {}).get("seconds"))
                    for s, k in requests.items()})
        row["extrapolated sizes"] = ", ".join(s for s, v in sizes.items() if v.get("extrapolated")) or "—"
        row["one request, 1 class (s)"] = as_float((cost.get("one_request_seconds") or {}).get(m))
        row["tuning (s)"] = as_float((cost.get("tuning_seconds") or {}).get(m))
        rows[method_label(m)] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")




def _values(config: Mapping) -> str:
    return ", ".join(f"{k} = {v}" for k, v in config.items()) or "—"


def grid_table(tuning: Mapping) -> pd.DataFrame:
    """Per tuned method: its budget (grid points per forget set), its grid, and the seconds its tuning took."""
    grids, budget, seconds = tuning.get("grids") or {}, tuning.get("budget") or {}, tuning.get("seconds") or {}
    return pd.DataFrame({
        "points per set": [budget.get(m) for m in grids],
        "grid": ["; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in g.items()) or "—" for g in grids.values()],
        "tuning (s)": [as_float(seconds.get(m)) for m in grids]}, index=pd.Index([method_label(m) for m in grids], name="method"))


def chosen_table(tuning: Mapping, name: Callable[[str], str] = str) -> pd.DataFrame:
    """One row per (method, forget set): the values chosen, the chosen point's validation accuracies (forget set,
    others) and its distance to Retrain's (the rule's); ``name`` turns a set key into its shown name."""
    rows = []
    for m, by_set in (tuning.get("chosen") or {}).items():
        for k, config in by_set.items():
            tried = (tuning.get("points") or {}).get(m, {}).get(k, [])
            point: Mapping = next((p for p in tried if p.get("config") == config), {})
            rows.append({"method": method_label(m), "forget set": name(k), "chosen": _values(config),
                         "forget acc. (val.)": as_float(point.get("forget")), "retain acc. (val.)": as_float(point.get("retain")),
                         "distance to Retrain (val.) ↓": as_float(point.get("distance"))})
    return pd.DataFrame(rows, columns=["method", "forget set", "chosen", "forget acc. (val.)", "retain acc. (val.)",
                                       "distance to Retrain (val.) ↓"])


# ---------------------------------------------------------------- the A/B view: which images

LIVE, BENCHMARK = "live", "benchmark"  # the A/B view's two image sets; one chart never mixes them


def ab_default_source(forget: Sequence[int], benchmark_set: Sequence[int] | int | None, has_benchmark: bool) -> str:
    """:data:`BENCHMARK` when its results cover the sidebar's forget set (empty, or exactly the benchmarked set chosen
    on the page: a class or its classes), else :data:`LIVE` (the dashboard's evaluation subset under that set)."""
    if benchmark_set is None:
        return LIVE
    chosen = tuple(sorted({int(c) for c in ([benchmark_set] if isinstance(benchmark_set, int) else benchmark_set)}))
    fs = tuple(sorted({int(c) for c in forget}))
    return BENCHMARK if has_benchmark and chosen and fs in ((), chosen) else LIVE


def live_set_note(forget: Sequence[int], benchmarked: Sequence[str | int], class_names: Sequence[str]) -> str:
    """Why the live forget set can or cannot be compared with Retrain and the baselines (a sentence for the page;
    ``benchmarked``: the keys of the forget sets with results, or single classes; ``class_names`` as shown)."""
    fs = sorted({int(c) for c in forget})
    named = ", ".join(f"{c}: {class_names[c]}" if 0 <= c < len(class_names) else str(c) for c in fs)
    what = "Class" if len(fs) == 1 else "The set"
    if fs and set_key(fs) in {str(k) for k in benchmarked}:
        return (f"{what} {named} is benchmarked: choose the benchmark's images (and that set above) for Retrain and "
                "the baselines, all on the benchmark's test images.")
    why = "the benchmark has Retrain and the baselines only for its own forget sets (the choices above)"
    return (f"No forget set in the sidebar, so \"WF, live\" is the original model; {why}." if not fs else
            f"The sidebar's set ({named}) has {len(fs)} classes and was not benchmarked: {why}." if len(fs) > 1 else
            f"Class {named} was not benchmarked: {why}.")
