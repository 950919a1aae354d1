"""Forget-set verdicts: thresholds stated, percentage points, set sizes beyond training."""

import math

import pytest

from wfexplain.evaluation.quality import judge, points, retain_tolerance


@pytest.mark.parametrize(("forget", "retain", "original", "size", "level", "label"), [
    (0.01, 0.91, 0.92, 1, "good", "Forgotten"),
    (0.192, 0.91, 0.92, 2, "partial", "Partly forgotten"),  # Sandal+Sneaker as the issue measured
    (0.365, 0.88, 0.92, 3, "poor", "Not forgotten"),
    (0.0, 0.85, 0.92, 1, "poor", "Not forgotten"),  # forgotten at 7 pp of retain: more than twice 1.5 pp
    (0.0, 0.895, 0.92, 1, "partial", "Partly forgotten"),  # 2.5 pp: over 1.5, under 3
    (0.16, math.nan, 0.92, 10, "partial", "Partly forgotten"),  # "all 10 classes": nothing retained
    (0.0, math.nan, 0.92, 10, "good", "Forgotten (nothing retained)"),
])
def test_judge(forget, retain, original, size, level, label):
    verdict = judge(forget, retain, original, size)
    assert (verdict.level, verdict.label) == (level, label)
    if level != "good":
        assert verdict.reasons


def test_reasons_quote_numbers_in_points():
    verdict = judge(0.0, 0.88, 0.92, 2)
    assert verdict.reasons == ("retain accuracy drops 4.0 pp (more than 4 pp for 2 classes)",) or verdict.level == "good"
    assert judge(0.0, 0.87, 0.92, 2).reasons == ("retain accuracy drops 5.0 pp (more than 4 pp for 2 classes)",)
    assert points(-0.041) == "-4.1 pp" and points(0.5) == "+50.0 pp"
    assert [retain_tolerance(k) for k in (1, 2, 3, 5)] == [0.015, 0.04, 0.06, 0.06]


def test_measured_size_reads_sets_then_the_older_keys():
    from types import SimpleNamespace

    from wfexplain.evaluation.quality import measured_size

    three = {"forget_accuracy_mean": 0.05, "count": 20, "sampled": True}
    new = SimpleNamespace(metrics={"evaluation": {"single": {"forget_accuracy_mean": 0.01}, "sets": {"3": three}}})
    assert measured_size(new, 3) is three and measured_size(new, 1) == {"forget_accuracy_mean": 0.01}
    assert measured_size(new, 5) is None and measured_size(SimpleNamespace(metrics={}), 1) is None
