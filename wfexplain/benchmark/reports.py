"""The benchmark's tables: methods x metrics as Markdown, LaTeX or CSV, and the four files a run writes."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import distributed as dist
from ..atomic import atomic_write, dir_lock, within, write_json
from ..checkpoint import CheckpointError, is_checkpoint, read_manifest
from ..methods import method_label
from ..spreadsheet import csv_safe
from .catalogue import BENCHMARK_FILE
from .comparison import (
    REFERENCES,
    benchmarked_sets,
    column_header,
    comparison_table,
    format_value,
    gap_to_retrain,
    means,
)


def benchmark_table(bench: dict, fmt: str = "md", size: str = "1") -> str:
    """Methods x metrics (mean ± std, gap to Retrain in brackets) as Markdown or LaTeX (booktabs), over the
    forget sets of ``size`` classes (``bench["by_size"]``; ``"1"``: the single classes, ``bench["methods"]``)."""
    table = comparison_table(bench, None, None if size == "1" else int(size))
    mean, std = means(table), table.xs("std", axis=1, level="stat")
    cols = [k for k in mean.columns if not mean[k].isna().all()]  # a file's extra metrics too; none that is empty
    gap = gap_to_retrain(table)

    def cell(m: str, k: str) -> str:
        if math.isnan(mean.at[m, k]):
            return "–"
        s, g = std.at[m, k], gap.at[m, k]
        text = format_value(k, mean.at[m, k]) + ("" if math.isnan(s) else f" ± {format_value(k, s)}")
        if m not in REFERENCES and not math.isnan(g):
            text += f" ({format_value(k, g, signed=True)})"
        return text

    head = [column_header(k) for k in cols]
    rows = [[method_label(m), *(cell(m, k) for k in cols)] for m in mean.index]
    if fmt == "md":
        lines = ["| method | " + " | ".join(head) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    def esc(s: str) -> str:
        for a, b in (("%", r"\%"), ("_", r"\_"), ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$")):
            s = s.replace(a, b)
        return s

    lines = [r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", " & ".join(["method", *map(esc, head)]) + r" \\",
             r"\midrule", *(" & ".join(map(esc, r)) + r" \\" for r in rows), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def benchmark_csv(bench: dict) -> bytes:
    """Every benchmarked number as a long table, one row per (forget set, method, metric): ``forget_set``
    (``0-6``; ``all-1``, ``all-2``, ``all-3`` = the mean over the sets of that size), ``method``, ``metric``,
    ``mean``, ``std`` and ``gap_to_retrain`` (mean − Retrain's). Raw values (accuracies as fractions, times in
    seconds); text cells made inert for spreadsheets (:func:`wfexplain.spreadsheet.csv_safe`, the OWASP
    CSV-injection rule)."""
    rows = []
    sizes = list(bench.get("by_size") or {"1": None})
    for label, forget, size in [*((f"all-{k}", None, int(k)) for k in sizes),
                                *((k, k, None) for k in benchmarked_sets(bench))]:
        table = comparison_table(bench, forget, None if size == 1 else size)
        gap = gap_to_retrain(table)
        for method in table.index:
            for metric in table.columns.get_level_values("metric").unique():
                rows.append({"forget_set": label, "method": method, "metric": metric,
                             "mean": table.loc[method, (metric, "mean")], "std": table.loc[method, (metric, "std")],
                             "gap_to_retrain": gap.loc[method, metric]})
    return csv_safe(pd.DataFrame(rows)).to_csv(index=False, float_format="%.9g").encode("utf-8")


def write_benchmark(bench: dict, directory: Path) -> list[Path]:
    """Write ``benchmark.json``, ``.md``, ``.tex`` and ``.csv`` (:func:`benchmark_csv`) atomically (rank 0 only).

    Into a checkpoint directory they are written under its writers' lock, and only while it still holds the
    weights benchmarked (``bench["weights"]``): a checkpoint rewritten meanwhile is refused (``CheckpointError``).
    """
    json_file = directory / BENCHMARK_FILE
    within(directory, json_file)  # not through a symlink planted in the directory
    paths = [json_file, *(json_file.with_suffix(s) for s in (".md", ".tex", ".csv"))]
    if not dist.is_main():
        return paths
    with dir_lock(directory):
        if is_checkpoint(directory) and read_manifest(directory).files != bench.get("weights"):
            raise CheckpointError(f"{directory} changed while it was benchmarked (its weight files differ); the "
                                  "benchmark was not written there: pass --out, or run it again")
        write_json(paths[0], bench)
        md = benchmark_markdown(bench)
        atomic_write(paths[1], lambda tmp: Path(tmp).write_text(md))
        atomic_write(paths[2], lambda tmp: Path(tmp).write_text(benchmark_table(bench, "tex")))
        atomic_write(paths[3], lambda tmp: Path(tmp).write_bytes(benchmark_csv(bench)))
    return paths


def benchmark_markdown(bench: dict) -> str:
    """``benchmark.md``: a table per set size, the cost at parity and the tuning's choices."""
    parts = []
    for size in bench.get("by_size") or {"1": None}:
        title = "single classes" if size == "1" else f"sets of {size} classes"
        parts += [f"## {title}\n", benchmark_table(bench, "md", size)]
    parity = (bench.get("cost") or {}).get("parity")
    if parity:
        req = ", ".join(f"{k} of {s} class(es)" for s, k in parity["requests"].items())
        parts += [f"## Cost at parity: answering {req}\n", "| method | seconds |", "|---|---|"]
        parts += [f"| {method_label(m)} | {t:.0f} |" for m, t in sorted(parity["totals"].items(), key=lambda x: x[1])]
        parts.append(f"\nWF and WF + removal pay one round for every class ({parity['wf_round_seconds']:.0f} s) once.\n")
    tuning = bench.get("tuning")
    if tuning:
        parts += ["## Tuning (validation split only)\n", f"Rule: {tuning['rule']}\n",
                  "| method | budget | grid | chosen per set |", "|---|---|---|---|"]
        for m, chosen in tuning["chosen"].items():
            grid = "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in tuning["grids"][m].items())
            picks = "; ".join(f"{k}: " + ", ".join(f"{f}={v}" for f, v in c.items()) for k, c in chosen.items())
            parts.append(f"| {method_label(m)} | {tuning['budget'][m]} | {grid} | {picks} |")
    return "\n".join(parts) + "\n"
