"""Forget-set verdicts: forgetting and retain damage judged apart, thresholds stated, misleading cases flagged."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from wfexplain.evaluation.quality import degenerate, forgetting, memory_trained, points, retain_tolerance, retention


@pytest.mark.parametrize(("forget", "level", "label"), [
    (0.01, "good", "Forgotten"),
    (0.05, "good", "Forgotten"),
    (0.192, "partial", "Partly forgotten"),  # Sandal+Sneaker as an issue measured
    (0.365, "poor", "Not forgotten"),
    (float("nan"), "partial", "No images to judge"),  # never a green "Forgotten" for want of images
])
def test_forgetting_reads_the_forget_accuracy_only(forget, level, label):
    verdict = forgetting(forget)
    assert (verdict.level, verdict.label) == (level, label)
    assert bool(verdict.reasons) == (level != "good")


@pytest.mark.parametrize(("retain", "original", "size", "level", "label"), [
    (0.91, 0.92, 1, "good", "Retain kept"),
    (0.895, 0.92, 1, "partial", "Retain damaged"),  # 2.5 pp: over 1.5, under 3
    (0.85, 0.92, 1, "poor", "Retain broken"),  # 7 pp: more than twice 1.5 pp
    (0.88, 0.92, 2, "good", "Retain kept"),
    (1.00, 0.73, 9, "good", "Retain kept"),  # a gain is never damage (degenerate() says why it may mislead)
    (math.nan, 0.92, 10, "partial", "Nothing retained"),
])
def test_retention_reads_the_retain_drop_only(retain, original, size, level, label):
    verdict = retention(retain, original, size)
    assert (verdict.level, verdict.label) == (level, label)


def test_a_forgotten_set_with_a_broken_retain_reads_both():
    """The issue's case: 0.0% forget accuracy read "Not forgotten" because the rest was damaged."""
    assert forgetting(0.0).label == "Forgotten" and retention(0.78, 0.92, 7).label == "Retain broken"


def test_reasons_quote_numbers_in_points():
    assert retention(0.87, 0.92, 2).reasons == ("retain accuracy drops 5.0 pp (more than 4 pp for 2 classes)",)
    assert forgetting(0.3).reasons == ("forget accuracy 30.0% is above 20%",)
    assert points(-0.041) == "-4.1 pp" and points(0.5) == "+50.0 pp"
    assert [retain_tolerance(k) for k in (1, 2, 3, 5)] == [0.015, 0.04, 0.06, 0.06]


def test_degenerate_flags_one_retained_class_and_a_collapsed_model():
    labels = np.repeat(np.arange(10), 10)
    healthy = labels.copy()
    healthy[labels == 3] = 4
    assert degenerate(labels, healthy, [3], 10) == ()
    collapsed = np.full(100, 7)
    notes = degenerate(labels, collapsed, [c for c in range(10) if c != 7], 10)
    assert len(notes) == 2 and "only one class is retained" in notes[0] and "100% of all images" in notes[1]
    assert degenerate(labels, collapsed, list(range(10)), 10)[0] == "every class is forgotten"
    one_class_images = np.full(50, 2)  # images of one class predicted as it: not a collapse
    assert degenerate(one_class_images, one_class_images, [5], 10) == ()


def test_memory_trained_reads_the_unlearning_round():
    assert memory_trained(SimpleNamespace(unlearned=True))
    assert not memory_trained(SimpleNamespace(unlearned=False)) and not memory_trained(None)


def test_measured_size_reads_sets_then_the_older_keys():
    from wfexplain.evaluation.quality import measured_size

    three = {"forget_accuracy_mean": 0.05, "count": 20, "sampled": True}
    new = SimpleNamespace(metrics={"evaluation": {"single": {"forget_accuracy_mean": 0.01}, "sets": {"3": three}}})
    assert measured_size(new, 3) is three and measured_size(new, 1) == {"forget_accuracy_mean": 0.01}
    assert measured_size(new, 5) is None and measured_size(SimpleNamespace(metrics={}), 1) is None
