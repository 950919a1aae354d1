"""The benchmark's tables: methods x metrics as Markdown, LaTeX or CSV, and the four files a run writes."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import distributed as dist
from ..atomic import atomic_write, dir_lock, within, write_json
from ..checkpoint import CheckpointError, is_checkpoint, read_manifest
from ..spreadsheet import csv_safe
from .catalogue import BENCHMARK_FILE, METRICS
from .comparison import benchmarked_classes, comparison_table, gap_to_retrain


def benchmark_table(bench: dict, fmt: str = "md") -> str:
    """Methods x metrics (mean ± std, gap to Retrain in brackets) as Markdown or LaTeX (booktabs)."""
    methods = bench["methods"]
    ref = methods.get("retrain", {})
    cols = list(METRICS)
    pct = {k for k in cols if "accuracy" in k or k in ("mia_efficacy",)}

    def cell(m: str, k: str) -> str:
        v = methods[m].get(k, {"mean": float("nan"), "std": float("nan")})
        mean, std = v["mean"], v["std"]
        if math.isnan(mean):
            return "–"
        scale = 100.0 if k in pct else 1.0
        text = f"{mean * scale:.1f} ± {std * scale:.1f}" if k in pct else f"{mean:.3g} ± {std:.2g}"
        if m not in ("retrain", "original") and k in ref and not math.isnan(ref[k]["mean"]):
            text += f" ({(mean - ref[k]['mean']) * scale:+.1f})" if k in pct else f" ({mean - ref[k]['mean']:+.3g})"
        return text

    head = [f"{METRICS[k].label}{' (%)' if k in pct else ''} {METRICS[k].arrow}" for k in cols]
    rows = [[m, *(cell(m, k) for k in cols)] for m in methods]
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
    """Every benchmarked number as a long table, one row per (forget class, method, metric): ``forget_class``
    (``all`` = the mean over the benchmarked classes), ``method``, ``metric``, ``mean``, ``std`` and
    ``gap_to_retrain`` (mean − Retrain's). Raw values (accuracies as fractions, times in seconds); text cells made
    inert for spreadsheets (:func:`wfexplain.spreadsheet.csv_safe`, the OWASP CSV-injection rule)."""
    rows = []
    for c in [None, *benchmarked_classes(bench)]:
        table = comparison_table(bench, c)
        gap = gap_to_retrain(table)
        for method in table.index:
            for metric in table.columns.get_level_values("metric").unique():
                rows.append({"forget_class": "all" if c is None else c, "method": method, "metric": metric,
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
        cost = bench["cost"]
        md = (benchmark_table(bench, "md") + f"\nWF, all {len(bench['class_names'])} classes: "
              f"{cost['wf_all_classes_seconds']:.0f} s; Retrain, one class: {cost['retrain_one_class_seconds']:.0f} s; "
              f"ratio {cost['ratio']:.2f}.\n")
        atomic_write(paths[1], lambda tmp: Path(tmp).write_text(md))
        atomic_write(paths[2], lambda tmp: Path(tmp).write_text(benchmark_table(bench, "tex")))
        atomic_write(paths[3], lambda tmp: Path(tmp).write_bytes(benchmark_csv(bench)))
    return paths
