"""How well one forget set was forgotten, and at what cost to the rest: two verdicts, judged separately against
stated thresholds (pure functions), and the cases where those numbers mislead.

The targets follow the project's checkpoint targets (docs/checkpoints.md): forget accuracy at or
below 5% on the forgotten classes' images counts as forgotten, above 20% as not forgotten; the
retain accuracy may drop by at most 1.5 percentage points for one class, 4 for two and 6 for
three or more. Percentage points (pp) are differences of accuracies, never relative percents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FORGOTTEN_AT_MOST = 0.05  # forget accuracy of a forgotten set
NOT_FORGOTTEN_ABOVE = 0.20
RETAIN_DROP_AT_MOST = {1: 0.015, 2: 0.04}  # by set size; larger sets: RETAIN_DROP_LARGE
RETAIN_DROP_LARGE = 0.06
COLLAPSED_AT = 0.9  # share of all predictions taken by one class that flags a collapsed model


@dataclass(frozen=True)
class Verdict:
    """One side of a forget set's quality: ``level`` is "good", "partial" or "poor"; ``reasons`` say why, with
    numbers."""

    level: str
    label: str
    reasons: tuple[str, ...]


def retain_tolerance(set_size: int) -> float:
    return RETAIN_DROP_AT_MOST.get(set_size, RETAIN_DROP_LARGE)


def forgetting(forget_accuracy: float) -> Verdict:
    """How well the forget set is forgotten, from its forget accuracy alone (damage to the rest is :func:`retention`).
    NaN (no image of the forgotten classes among those scored): nothing to judge, said as such."""
    if math.isnan(forget_accuracy):
        return Verdict("partial", "No images to judge", ("no image of the forgotten classes among the images scored",))
    if forget_accuracy > NOT_FORGOTTEN_ABOVE:
        return Verdict("poor", "Not forgotten", (f"forget accuracy {forget_accuracy:.1%} is above {NOT_FORGOTTEN_ABOVE:.0%}",))
    if forget_accuracy > FORGOTTEN_AT_MOST:
        return Verdict("partial", "Partly forgotten",
                       (f"forget accuracy {forget_accuracy:.1%} is above {FORGOTTEN_AT_MOST:.0%}",))
    return Verdict("good", "Forgotten", ())


def retention(retain_accuracy: float, original_retain_accuracy: float, set_size: int) -> Verdict:
    """What forgetting ``set_size`` classes costs the others: their accuracy drop against the tolerance for that size
    (kept: within it; damaged: within twice it; broken: more). NaN retain accuracy: no class is left."""
    if math.isnan(retain_accuracy):
        return Verdict("partial", "Nothing retained", ("no other class is left to measure retain accuracy on",))
    drop, tolerance = original_retain_accuracy - retain_accuracy, retain_tolerance(set_size)
    if drop <= tolerance + 1e-9:  # 0.92 - 0.88 is 0.04 plus rounding
        return Verdict("good", "Retain kept", ())
    why = (f"retain accuracy drops {drop * 100:.1f} pp (more than {tolerance * 100:g} pp for {set_size} "
           f"class{'es' if set_size > 1 else ''})",)
    return Verdict("partial", "Retain damaged", why) if drop <= 2 * tolerance + 1e-9 else Verdict("poor", "Retain broken", why)


def degenerate(labels: np.ndarray, filtered: np.ndarray, forget: Sequence[int], num_classes: int) -> tuple[str, ...]:
    """Why the numbers of a forget set say less than they seem (empty when nothing is wrong).

    A set that leaves one class or none to retain: retain accuracy then cannot show damage (a model that predicts
    the one retained class everywhere scores 100%). A collapsed filtered model: one class takes at least
    :data:`COLLAPSED_AT` of all predictions (forgetting by predicting one class is not forgetting a class)."""
    notes = []
    left = num_classes - len(set(forget))
    if left <= 1:
        notes.append("only one class is retained, so retain accuracy cannot show damage" if left == 1 else
                     "every class is forgotten")
    if len(filtered):
        counts = np.bincount(np.asarray(filtered, dtype=np.int64), minlength=num_classes)
        top = int(counts.argmax())
        share = counts[top] / len(filtered)
        if share >= COLLAPSED_AT and num_classes > 1 and np.mean(np.asarray(labels) == top) < COLLAPSED_AT:
            notes.append(f"the filtered model predicts one class for {share:.0%} of all images: it has collapsed")
    return tuple(notes)


def memory_trained(manifest) -> bool:
    """Whether the checkpoint's memory matrices went through an unlearning round (``wfexplain unlearn``): before
    that, its filters are untrained and what they do is not forgetting."""
    return manifest is not None and manifest.unlearned


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
