"""How the Compare page lays out a benchmark: metric tables by family that fit the page, and which images
the A/B view compares (the benchmark's or the dashboard's live subset, never mixed in one chart)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

# ---------------------------------------------------------------- tables that fit the page, by family

FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Forgetting", ("forget_accuracy_test", "forget_accuracy_train", "zrf")),
    ("Utility and cost", ("retain_accuracy_test", "retain_accuracy_train", "seconds")),
    ("Privacy and residual knowledge", ("mia_efficacy", "relearn_steps", "probe_accuracy")),
)
MAX_COLUMNS = 3  # metrics per table: with the method names about 110 characters, well inside a wide page
MAX_TABLE_CHARS = 115  # the bound :func:`text_width` of a formatted family table stays under (tests check it)


def metric_groups(metrics: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``(title, metrics)`` tables of at most :data:`MAX_COLUMNS` columns, by :data:`FAMILIES` in their order, then
    the metrics of no family (e.g. a custom one) as "Other" tables; empty groups are dropped."""
    known = {m for _, members in FAMILIES for m in members}
    groups = [(title, [m for m in members if m in metrics]) for title, members in FAMILIES]
    rest = [m for m in metrics if m not in known]
    groups += [("Other", rest[i:i + MAX_COLUMNS]) for i in range(0, len(rest), MAX_COLUMNS)]
    return [(title, ms) for title, ms in groups if ms]


def text_width(table: pd.DataFrame) -> int:
    """A width estimate in characters: per column, index included, the longest of its header and cells, summed."""
    heads = [str(table.index.name or ""), *map(str, table.columns)]
    cols = [list(map(str, table.index)), *([str(v) for v in table[c]] for c in table.columns)]
    return sum(max([len(h), *map(len, col)]) for h, col in zip(heads, cols, strict=True))


# ---------------------------------------------------------------- the A/B view: which images

LIVE, BENCHMARK = "live", "benchmark"  # the A/B view's two image sets; one chart never mixes them


def ab_default_source(forget: Sequence[int], benchmark_class: int | None, has_benchmark: bool) -> str:
    """:data:`BENCHMARK` when its results cover the sidebar's forget set (empty, or exactly the benchmarked class
    chosen on the page), else :data:`LIVE` (the dashboard's evaluation subset under that set)."""
    fs = tuple(sorted({int(c) for c in forget}))
    return BENCHMARK if has_benchmark and benchmark_class is not None and fs in ((), (benchmark_class,)) else LIVE


def live_set_note(forget: Sequence[int], benchmarked: Sequence[int], class_names: Sequence[str]) -> str:
    """Why the live forget set can or cannot be compared with Retrain and the baselines (a sentence for the page)."""
    fs = sorted({int(c) for c in forget})
    named = ", ".join(f"{c}: {class_names[c]}" if 0 <= c < len(class_names) else str(c) for c in fs)
    why = "the benchmark has Retrain and the baselines only for single benchmarked forget classes"
    if len(fs) == 1 and fs[0] in benchmarked:
        return (f"Class {named} is benchmarked: choose the benchmark's images (and that class above) for Retrain and "
                "the baselines, all on the benchmark's test images.")
    return (f"No forget set in the sidebar, so \"WF, live\" is the original model; {why}." if not fs else
            f"The sidebar's set ({named}) has {len(fs)} classes: {why}." if len(fs) > 1 else
            f"Class {named} was not benchmarked: {why}.")
