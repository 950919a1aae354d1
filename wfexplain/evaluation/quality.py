"""How well one forget set was forgotten, judged against stated thresholds (a pure function).

The targets follow the project's checkpoint targets (docs/checkpoints.md): forget accuracy at or
below 5% on the forgotten classes' images counts as forgotten, above 20% as not forgotten; the
retain accuracy may drop by at most 1.5 percentage points for one class, 4 for two and 6 for
three or more. Percentage points (pp) are differences of accuracies, never relative percents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FORGOTTEN_AT_MOST = 0.05  # forget accuracy of a forgotten set
NOT_FORGOTTEN_ABOVE = 0.20
RETAIN_DROP_AT_MOST = {1: 0.015, 2: 0.04}  # by set size; larger sets: RETAIN_DROP_LARGE
RETAIN_DROP_LARGE = 0.06


@dataclass(frozen=True)
class Verdict:
    """A forget set's quality: ``level`` is "good", "partial" or "poor"; ``reasons`` say why, with numbers."""

    level: str
    label: str
    reasons: tuple[str, ...]


def retain_tolerance(set_size: int) -> float:
    return RETAIN_DROP_AT_MOST.get(set_size, RETAIN_DROP_LARGE)


def judge(forget_accuracy: float, retain_accuracy: float, original_retain_accuracy: float, set_size: int) -> Verdict:
    """The verdict for one forget set of ``set_size`` classes (accuracies as fractions; NaN retain: no other class)."""
    reasons = []
    if forget_accuracy > NOT_FORGOTTEN_ABOVE:
        level = "poor"
        reasons.append(f"forget accuracy {forget_accuracy:.1%} is above {NOT_FORGOTTEN_ABOVE:.0%}")
    elif forget_accuracy > FORGOTTEN_AT_MOST:
        level = "partial"
        reasons.append(f"forget accuracy {forget_accuracy:.1%} is above {FORGOTTEN_AT_MOST:.0%}")
    else:
        level = "good"
    if math.isnan(retain_accuracy):
        reasons.append("no other class is left to measure retain accuracy on")
    else:
        drop, tolerance = original_retain_accuracy - retain_accuracy, retain_tolerance(set_size)
        if drop > tolerance:
            level = "poor" if level == "poor" or drop > 2 * tolerance else "partial"
            reasons.append(f"retain accuracy drops {drop * 100:.1f} pp (more than {tolerance * 100:g} pp for "
                           f"{set_size} class{'es' if set_size > 1 else ''})")
    label = {"good": "Forgotten", "partial": "Partly forgotten", "poor": "Not forgotten"}[level]
    if level == "good" and reasons:  # forgotten, but nothing is left to keep
        label = "Forgotten (nothing retained)"
    return Verdict(level, label, tuple(reasons))


def points(delta: float) -> str:
    """An accuracy difference in percentage points: ``+1.2 pp``."""
    return f"{delta * 100:+.1f} pp"


def set_sizes(manifest) -> tuple[int | None, tuple[int, ...]]:
    """(largest forget-set size the memory was trained on, set sizes its recorded evaluation measured, ascending).

    Measured: 1 with ``single``, 2 with ``pairs``, and every size keyed under ``sets`` (``evaluate --sets``).
    """
    trained = (manifest.unlearn_config or {}).get("max_set_size")
    evaluation = manifest.metrics.get("evaluation") or {}
    measured = {size for size, key in ((1, "single"), (2, "pairs")) if key in evaluation}
    keyed = evaluation.get("sets")
    if isinstance(keyed, dict):
        measured |= {int(k) for k in keyed if isinstance(k, str) and k.isdigit() and int(k) >= 1}
    return trained, tuple(sorted(measured))


def measured_size(manifest, size: int) -> dict | None:
    """The recorded evaluation of forget sets of ``size`` classes (``evaluate --record``), or None.

    The entry of ``sets`` (``count``, ``sampled``, the summary means) if present, else ``single`` or
    ``pairs`` for sizes 1 and 2 (older manifests).
    """
    evaluation = manifest.metrics.get("evaluation") or {}
    keyed = evaluation.get("sets")
    if isinstance(keyed, dict) and isinstance(keyed.get(str(size)), dict):
        return keyed[str(size)]
    legacy = {1: "single", 2: "pairs"}.get(size)
    return evaluation.get(legacy) if legacy and isinstance(evaluation.get(legacy), dict) else None
