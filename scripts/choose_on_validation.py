"""Choose an unlearning configuration on the validation split (issue 14), never on test.

Reads the ``evaluate --split validation --sets 1 2 3 5 --json`` reports of a sweep (default:
runs/logs/vit-*-val.json, written by scripts/vit_sweep.sh), prints each configuration against the
targets, and names the one that meets the most of them; ties go to the smallest total excess over
the targets (in points), then to the lowest forget accuracy on 5-class sets (which have no target).
Usage: ``python scripts/choose_on_validation.py [REPORT.json ...]``.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

# (set size, statistic, bound in points): forget accuracy mean / max at most the bound, retain drop at most it.
TARGETS = ((1, "forget_mean", 1.0), (1, "forget_max", 5.0), (1, "retain_drop", 1.5), (2, "forget_mean", 3.0),
           (2, "retain_drop", 4.0), (3, "forget_mean", 5.0), (3, "retain_drop", 6.0))


def figures(report: dict) -> dict[tuple[int, str], float]:
    """(size, statistic) -> value in points, from an ``evaluate --sets`` report."""
    out = {}
    for size, s in report["sets"].items():
        k = int(size)
        out[k, "forget_mean"] = 100 * s["forget_accuracy_mean"]
        out[k, "forget_max"] = 100 * s["forget_accuracy_max"]
        out[k, "retain_drop"] = 100 * (s["original_retain_accuracy_mean"] - s["retain_accuracy_mean"])
    return out


def score(fig: dict[tuple[int, str], float]) -> tuple[int, float]:
    """(targets met, total excess over the targets missed, in points)."""
    excess = [max(0.0, fig[k, stat] - bound) for k, stat, bound in TARGETS if (k, stat) in fig]
    return sum(e == 0.0 for e in excess), sum(excess)


def main(paths: list[str]) -> int:
    paths = paths or sorted(glob.glob("runs/logs/vit-*-val.json"))
    rows = []
    for p in paths:
        try:
            fig = figures(json.loads(Path(p).read_text()))
        except (OSError, ValueError, KeyError) as e:
            print(f"skipped {p}: {e}", file=sys.stderr)
            continue
        rows.append((Path(p).name.removesuffix("-val.json"), fig, score(fig)))
    if not rows:
        print("no validation reports found", file=sys.stderr)
        return 1
    head = " | ".join(f"k{k} {stat} ≤ {bound:g}" for k, stat, bound in TARGETS)
    print(f"| configuration | {head} | met | excess (points) |")
    print("|---" * (len(TARGETS) + 3) + "|")
    for name, fig, (met, excess) in rows:
        cells = " | ".join(f"{fig[k, stat]:.2f}" + ("" if fig[k, stat] <= bound else " ✗") for k, stat, bound in TARGETS)
        print(f"| {name} | {cells} | {met}/{len(TARGETS)} | {excess:.2f} |")
    best = max(rows, key=lambda r: (r[2][0], -r[2][1], -r[1].get((5, "forget_mean"), float("inf"))))
    five = best[1].get((5, "forget_mean"))
    print(f"\nchosen on validation: {best[0]} ({best[2][0]}/{len(TARGETS)} targets met, {best[2][1]:.2f} points over"
          + (f", 5-sets forget mean {five:.2f}" if five is not None else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
