import math

import pytest
import torch

from wfexplain.evaluation.metrics import accuracy, forget_accuracy, per_class_accuracy, retain_accuracy
from wfexplain.objectives import forget_loss, retain_loss, sample_forget_sets, sparsity_loss, wf_objective


def test_retain_loss_is_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert retain_loss(logits, y).item() == pytest.approx(expected, rel=1e-6)


def test_forget_loss_is_bounded_reciprocal():
    logits = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([0])
    assert forget_loss(logits, y, eps=0.5).item() == pytest.approx(1 / (math.log(2) + 0.5), rel=1e-6)
    # A perfectly confident correct prediction (CE -> 0) is bounded by 1 / eps.
    sure = torch.tensor([[100.0, -100.0]])
    assert forget_loss(sure, y, eps=1e-3).item() == pytest.approx(1000.0, rel=1e-3)
    # Far from the label the term goes to 0 instead of diverging.
    away = torch.tensor([[-50.0, 50.0]])
    assert forget_loss(away, y).item() == pytest.approx(0.01, rel=1e-3)


def test_sparsity_loss_mean_of_one_minus_alpha():
    a = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5, 1.0, 1.0]])]
    assert sparsity_loss(a).item() == pytest.approx((0 + 1 + 0.5 + 0.5 + 0 + 0) / 6)


def test_objective_combines_terms_with_weights():
    lf, yf = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    lr, yr = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    alphas = [torch.tensor([[0.5, 1.0]])]
    out = wf_objective(lf, yf, lr, yr, alphas, lambda_r=2.0, lambda_f=3.0, lambda_s=4.0, eps=0.0)
    expected = 2 * math.log(1 + math.exp(-2)) + 3 / math.log(2) + 4 * 0.25
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert set(out) == {"loss", "retain", "forget", "sparsity"}


@pytest.mark.parametrize("contains", [True, False])
def test_forget_set_sampling(contains):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (2000,), generator=g)
    mask = sample_forget_sets(y, 10, max_size=3, contains_label=contains, generator=g)
    assert mask.shape == (2000, 10) and mask.dtype == torch.bool
    assert torch.all(mask[torch.arange(2000), y] == contains)
    sizes = mask.sum(1)
    assert sizes.min() == 1 and sizes.max() == 3
    assert set(sizes.tolist()) == {1, 2, 3}
    # Every other class appears as a companion: sets are random, not fixed.
    assert torch.all(mask.sum(0) > 0)


def test_forget_set_sampling_is_seeded():
    y = torch.arange(10)
    a = sample_forget_sets(y, 10, 2, True, torch.Generator().manual_seed(1))
    b = sample_forget_sets(y, 10, 2, True, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_accuracy_metrics_by_hand():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    p = torch.tensor([0, 1, 1, 1, 0, 0])
    assert accuracy(p, y) == pytest.approx(3 / 6)
    assert per_class_accuracy(p, y, 4)[:3] == pytest.approx([0.5, 1.0, 0.0])
    assert math.isnan(per_class_accuracy(p, y, 4)[3])
    assert forget_accuracy(p, y, [0]) == pytest.approx(0.5)
    assert retain_accuracy(p, y, [0]) == pytest.approx(2 / 4)
    assert forget_accuracy(p, y, [1, 2]) == pytest.approx(2 / 4)
    assert retain_accuracy(p, y, [1, 2]) == pytest.approx(1 / 2)
