"""The unlearning metrics beyond accuracy (wfexplain.evaluation.metrics): JS / ZRF, MIA-efficacy, linear probe, relearn time."""

import math

import numpy as np
import pytest
import torch

from wfexplain.evaluation.metrics import js_divergence, probe_accuracy, relearn_steps, true_class_confidence, zrf

LN2 = math.log(2)


# ---------------------------------------------------------------- true-class confidence


def test_true_class_confidence_picks_the_target_column():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
    conf = true_class_confidence(probs, torch.tensor([0, 2, 1]))
    assert conf.shape == (3,)
    assert torch.equal(conf, torch.tensor([0.7, 0.6, 0.5]))


# ---------------------------------------------------------------- Jensen-Shannon and ZRF


def test_js_of_identical_distributions_is_zero():
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    assert torch.equal(js_divergence(p, p.clone()), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_js_of_disjoint_one_hots_is_ln2(dtype):
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    q = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype)
    js = js_divergence(p, q)
    assert not js.isnan().any()
    assert js.tolist() == pytest.approx([LN2, LN2], rel=1e-6)


def test_js_matches_the_hand_computed_value():
    # p = [1, 0], q = [1/2, 1/2], m = [3/4, 1/4]
    # KL(p || m) = 1 ln(1 / (3/4))                      (the 0 ln 0 term is 0)
    # KL(q || m) = 1/2 ln((1/2) / (3/4)) + 1/2 ln((1/2) / (1/4))
    kl_pm = math.log(1 / 0.75)
    kl_qm = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    expected = 0.5 * kl_pm + 0.5 * kl_qm  # = 0.5 ln(2/1.5) + 0.25 ln(2/3) + 0.25 ln 2 ~ 0.2158
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert js_divergence(p, q).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.2157615543388357, rel=1e-12)


def test_js_is_symmetric_and_bounded():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(50, 7, generator=g, dtype=torch.float64).pow(4).softmax(1)
    q = (5 * torch.randn(50, 7, generator=g, dtype=torch.float64)).softmax(1)
    js = js_divergence(p, q)
    assert js.shape == (50,)
    assert torch.allclose(js, js_divergence(q, p), rtol=0, atol=1e-15)
    assert (js >= 0).all() and (js <= LN2).all() and (js > 0).all()


def test_zrf_identical_is_one_and_disjoint_one_hot_is_one_minus_ln2():
    p = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    assert zrf(p, p.clone()) == 1.0
    eye = torch.eye(3)
    assert zrf(eye, eye.roll(1, dims=1)) == pytest.approx(1 - LN2, rel=1e-6)


def test_zrf_averages_per_sample_divergences():
    # one identical row (JS 0) and one disjoint row (JS ln 2): mean over samples = ln2 / 2
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    assert zrf(p, q) == pytest.approx(1 - LN2 / 2, rel=1e-12)
    assert math.isnan(zrf(torch.empty(0, 3), torch.empty(0, 3)))


# ---------------------------------------------------------------- MIA-efficacy


# ---------------------------------------------------------------- linear probe


def _features(rng, y, num_classes, separable):
    x = rng.normal(0.0, 1.0, (len(y), 16))
    if separable:
        x[:, :num_classes] += 6.0 * np.eye(num_classes)[y]
    return x


def test_probe_accuracy_separable_features_carry_the_class():
    rng = np.random.default_rng(0)
    y_train, y_test = np.repeat(np.arange(4), 100), np.repeat(np.arange(4), 30)
    x_train, x_test = _features(rng, y_train, 4, True), _features(rng, y_test, 4, True)
    # tensors as produced by the benchmark; max_train exercises the subsampling
    acc = probe_accuracy(torch.from_numpy(x_train).float(), torch.from_numpy(y_train), torch.from_numpy(x_test).float(),
                         torch.from_numpy(y_test), [2], max_train=200)
    assert acc == 1.0


def test_probe_accuracy_uninformative_features_are_near_chance():
    rng = np.random.default_rng(1)
    y_train, y_test = rng.integers(0, 4, 800), np.repeat(np.arange(4), 200)
    x_train, x_test = _features(rng, y_train, 4, False), _features(rng, y_test, 4, False)
    acc = probe_accuracy(x_train, y_train, x_test, y_test, [0, 3], seed=0)
    assert 0.0 <= acc <= 0.45  # chance = 1/4 (the probe sees no signal, only noise)
    assert acc == probe_accuracy(x_train, y_train, x_test, y_test, [0, 3], seed=0)


def test_probe_accuracy_without_forget_test_images_is_nan():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 10)
    x = _features(rng, y, 3, True)
    assert math.isnan(probe_accuracy(x, y, x[y != 1], y[y != 1], [1]))


# ---------------------------------------------------------------- relearn time

CENTERS = 3 * torch.tensor([[math.cos(2 * math.pi * k / 3), math.sin(2 * math.pi * k / 3)] for k in range(3)])


def _class_samples(k: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return CENTERS[k] + 0.3 * torch.randn(n, 2, generator=g), torch.full((n,), k)


@pytest.fixture
def forget_data():
    g = torch.Generator().manual_seed(0)
    return (*_class_samples(2, 32, g), *_class_samples(2, 64, g))


def _net(avoid_class_2: bool) -> torch.nn.Module:
    """A linear classifier of 3 clusters; ``avoid_class_2``: class 2's row points away and its bias is very low."""
    net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(2, 3))
    with torch.no_grad():
        net[1].weight.copy_(CENTERS)
        net[1].bias.zero_()
        if avoid_class_2:
            net[1].weight[2] = -CENTERS[2]
            net[1].bias[2] = -3.0
    return net.eval()


def test_relearn_steps_is_zero_when_the_class_is_known(forget_data):
    assert relearn_steps(_net(False), *forget_data) == 0


def test_relearn_steps_counts_steps_for_a_forgotten_class(forget_data):
    net = _net(True)
    with torch.no_grad():
        assert (net(forget_data[2]).argmax(1) != 2).all()
    steps = relearn_steps(net, *forget_data, lr=0.05, max_steps=200, seed=0)
    assert 0 < steps < 200
    # a smaller learning rate takes longer; too few steps are censored at max_steps
    assert relearn_steps(net, *forget_data, lr=0.01, max_steps=200, seed=0) > steps
    assert relearn_steps(net, *forget_data, lr=0.05, max_steps=3, seed=0) == 3


def test_relearn_steps_leaves_the_net_untouched_and_is_deterministic(forget_data):
    net = _net(True).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = []
    net.register_forward_hook(lambda m, i, o: modes.append(m.training))  # deepcopy shares the hook's list
    runs = [relearn_steps(net, *forget_data, lr=0.05, batch_size=8, max_steps=200, seed=7) for _ in range(2)]
    assert runs[0] == runs[1] and 0 < runs[0] < 200
    assert modes and not any(modes)  # the copy runs in eval mode (dropout off)
    assert net.training  # the argument's mode is kept
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_relearn_steps_freezes_batchnorm_statistics(forget_data):
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 3))
    with torch.no_grad():
        net[1].weight.copy_(-CENTERS)
    stats = []
    net[0].register_forward_hook(lambda m, i, o: stats.append(m.running_mean.clone()))
    relearn_steps(net.eval(), *forget_data, lr=0.05, max_steps=5)
    assert len(stats) > 1 and all(torch.equal(s, torch.zeros(2)) for s in stats)
    assert torch.equal(net[0].running_mean, torch.zeros(2))


def test_relearn_steps_empty_inputs_raise(forget_data):
    fx, fy, ex, ey = forget_data
    with pytest.raises(ValueError, match="forget and eval"):
        relearn_steps(_net(True), fx[:0], fy[:0], ex, ey)
    with pytest.raises(ValueError, match="forget and eval"):
        relearn_steps(_net(True), fx, fy, ex[:0], ey[:0])
