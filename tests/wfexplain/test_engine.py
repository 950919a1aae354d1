import pytest
import torch

from wfexplain.backbones import create_backbone
from wfexplain.engine import TrainConfig, UnlearnConfig, train_classifier, train_memory
from wfexplain.evaluation import evaluate
from wfexplain.filtering import FilteredModel


@pytest.fixture(scope="module")
def trained(synthetic, tiny_info):
    torch.manual_seed(0)
    backbone = create_backbone("cnn", 5, 1, 16)
    result = train_classifier(backbone, synthetic(500, 0), TrainConfig(epochs=3, batch_size=50, shift=0.0))
    return FilteredModel("cnn", tiny_info(), backbone), result


def test_train_classifier_learns_and_reports(trained, synthetic):
    model, result = trained
    assert result["cancelled"] is False and result["steps"] == 30
    report = evaluate(model, synthetic(200, 1))
    assert report["original_accuracy"] > 0.9


@pytest.mark.slow
def test_unlearning_round_forgets_every_class(trained, synthetic):
    model, _ = trained
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    calls = []
    result = train_memory(model, synthetic(500, 2), UnlearnConfig(steps=200, batch_size=50, lr=5e-2),
                          progress=lambda step, total, m: calls.append((step, total)))
    assert result["cancelled"] is False
    assert calls[-1] == (200, 200) and len(calls) == 200
    assert all(torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items()), "backbone frozen"
    assert all(a.min() >= 0 and a.max() <= 1 for a in model.memory.values()), "alphas clamped"
    report = evaluate(model, synthetic(200, 3), pairs=True)
    single, pairs = report["single"], report["pairs"]
    assert single["forget_accuracy_mean"] < 0.2
    assert single["retain_accuracy_mean"] > 0.8
    assert pairs["forget_accuracy_mean"] < 0.3
    matrix = torch.tensor(report["forget_matrix"])
    assert matrix.shape == (5, 5)
    assert matrix.diagonal().mean() < matrix.mean() - 0.3


def test_loops_stop_cleanly(trained, synthetic):
    model, _ = trained
    memory = {k: v.clone() for k, v in model.memory.items()}
    steps = []
    result = train_memory(model, synthetic(200, 4), UnlearnConfig(steps=20, batch_size=50),
                          progress=lambda s, t, m: steps.append(s), should_stop=lambda: len(steps) >= 3)
    assert result["cancelled"] is True and result["steps"] == 3
    assert any(not torch.equal(v, memory[k]) for k, v in model.memory.items())
    r = train_classifier(create_backbone("cnn", 5, 1, 16), synthetic(100, 5), TrainConfig(epochs=1, batch_size=50),
                         should_stop=lambda: True)
    assert r == {"steps": 0, "seconds": r["seconds"], "final_loss": None, "cancelled": True}


def test_evaluate_limit_is_stratified(trained, synthetic):
    model, _ = trained
    report = evaluate(model, synthetic(200, 6), limit=50)
    assert report["num_images"] == 50
    assert set(report) >= {"original_accuracy", "forget_matrix", "single", "seconds"}
    assert "pairs" not in report


def test_hard_threshold_evaluation_uses_baked_models(trained, synthetic):
    model, _ = trained
    data = synthetic(100, 7)
    soft = evaluate(model, data)
    same = evaluate(model, data, hard_threshold=0.0)  # zeroes nothing: equals the gated model
    torch.testing.assert_close(torch.tensor(same["forget_matrix"]), torch.tensor(soft["forget_matrix"]))
    assert same["hard_threshold"] == 0.0
    hard = evaluate(model, data, hard_threshold=1.01)  # zeroes every gated component of the filter
    assert hard["single"]["retain_accuracy_mean"] < soft["single"]["retain_accuracy_mean"]


def test_random_erasing_covers_a_rectangle_of_the_chosen_share_of_images():
    from wfexplain.engine import _erase

    x = torch.ones(2000, 1, 28, 28)
    out = _erase(x, 0.5, torch.Generator().manual_seed(0))
    erased = (out == 0).float()
    share = erased.mean((1, 2, 3))
    assert 0.45 < (share > 0).float().mean() < 0.55
    hit = share > 0
    assert share[hit].min() >= 0.01 and share.max() <= 0.35  # 2-33% of the area, up to rounding
    rows, cols = erased[hit, 0].amax(2), erased[hit, 0].amax(1)  # each erased region is one rectangle
    assert torch.equal(erased[hit, 0].sum((1, 2)), rows.sum(1) * cols.sum(1))
    assert torch.equal(_erase(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_bf16_training_learns_and_returns_a_float32_model_in_the_usual_layout(synthetic, tiny_info):
    torch.manual_seed(0)
    net = create_backbone("cnn", 5, 1, 16)
    result = train_classifier(net, synthetic(500, 0), TrainConfig(epochs=3, batch_size=50, shift=0.0, bf16=True,
                                                                  erase=0.3))
    assert result["cancelled"] is False
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in net.parameters())
    assert not net.training
    assert evaluate(FilteredModel("cnn", tiny_info(), net), synthetic(200, 1))["original_accuracy"] > 0.9
