"""Scale in classes, on a synthetic 1,000-class head: an unlearning step, the precomputed answers, the Forget page's
charts (measured by perf/classes.py; here what must hold: bounded memory, bounded payloads, exact results)."""

import numpy as np
import pytest
import torch

import wfexplain
from wfexplain.answers import CACHE_ENV, Answers, set_bytes, singles_and_pairs
from wfexplain.checkpoint import save_checkpoint
from wfexplain.configs import UnlearnConfig
from wfexplain.engine import train_memory
from wfexplain.inference import Predictor

CLASSES = 1000


@pytest.mark.slow
def test_one_unlearning_step_at_a_thousand_classes(make_model):
    """Per-sample sets of up to 3 of 1,000 classes: the step runs from each sample's members (its gates equal the
    dense product: tests/wfexplain/test_filtering.py) and moves the memory, kept in [0, 1]."""
    from torch.utils.data import TensorDataset

    model = make_model("cnn", num_classes=CLASSES)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 16, 16, generator=g), torch.randint(CLASSES, (32,), generator=g)
    before = {k: a.detach().clone() for k, a in model.alphas.items()}
    out = train_memory(model, TensorDataset(x, y), UnlearnConfig(steps=1, batch_size=32, max_set_size=3))
    assert out["steps"] == 1 and not out["cancelled"]
    assert any(not torch.equal(a, before[k]) for k, a in model.alphas.items())
    assert all(bool(((a >= 0) & (a <= 1)).all()) for a in model.alphas.values())


@pytest.mark.slow
def test_the_precomputed_answers_of_a_thousand_classes_stay_small(tmp_path, monkeypatch, make_model):
    """1,001 sets (the model and every single class; no pairs past 20 classes), 4 bytes an image each."""
    monkeypatch.delenv(CACHE_ENV, raising=False)
    save_checkpoint(make_model("cnn", num_classes=CLASSES), tmp_path / "ck", {"seed": 0})
    x = torch.randn(40, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    answers = Answers(Predictor(wfexplain.load(tmp_path / "ck"), x), tmp_path / "ck")
    assert answers.fill(write_every=500)["computed"] == len(singles_and_pairs(CLASSES)) == 1001
    stored = sum(t.numel() * t.element_size() for t in answers._tensors().values())
    assert stored == 1001 * set_bytes(40, CLASSES) == 1001 * 40 * 4
    assert answers.path.stat().st_size < 2 * stored + 200_000  # the file: those bytes and their names
    again = Answers(Predictor(wfexplain.load(tmp_path / "ck"), x), tmp_path / "ck")
    assert again.rejected == 0 and again.done == 1001  # read back, signed and valid


@pytest.mark.slow
def test_the_forget_pages_charts_stay_light_at_a_thousand_classes():
    """The forgotten classes and those that changed most, at most 40 classes a chart (10.7 MB of JSON before)."""
    from wfexplain import figures
    from wfexplain.figures.dashboard import MOST_CLASSES

    rng = np.random.default_rng(0)
    y = rng.integers(CLASSES, size=2000)
    p0 = np.where(rng.random(2000) < 0.9, y, rng.integers(CLASSES, size=2000))
    forget = (3, 500, 999)
    p1 = np.where(np.isin(y, forget), (y + 7) % CLASSES, p0)
    acc0 = np.array([np.mean(p0[y == c] == c) if np.any(y == c) else np.nan for c in range(CLASSES)])
    acc1 = np.array([np.mean(p1[y == c] == c) if np.any(y == c) else np.nan for c in range(CLASSES)])
    names = [f"class {i}" for i in range(CLASSES)]
    cm0, cm1 = np.zeros((CLASSES, CLASSES)), np.zeros((CLASSES, CLASSES))
    np.add.at(cm0, (y, p0), 1)
    np.add.at(cm1, (y, p1), 1)
    bars = figures.accuracy_bars(acc0, acc1, names, forget)
    shift = figures.confusion_shift(cm0, cm1, names, forget)
    flow = figures.prediction_flow(y, p1, names, forget)
    assert len(bars.data[0].x) == MOST_CLASSES and {"class 3 (forgotten)", "class 999 (forgotten)"} <= set(bars.data[0].x)
    assert "(40 of 1,000 classes)" in bars.layout.title.text
    assert shift.data[0].z.shape == (MOST_CLASSES, MOST_CLASSES) and "class 500" in shift.data[0].x
    assert sum(len(f.to_json()) for f in (bars, shift, flow)) < 200_000
    small = figures.accuracy_bars(acc0[:10], acc1[:10], names[:10], (3,))
    assert len(small.data[0].x) == 10 and "of" not in small.layout.title.text.split("better")[-1]  # all, no note
