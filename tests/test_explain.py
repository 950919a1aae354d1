import threading

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import tiny_info
from wfexplain.explain import METHODS, attribute, black_baseline, insertion_deletion, list_methods, top_k

BACKBONES = ["cnn", "resnet18", "vit"]


def _x(b=2, c=1, seed=1):
    return torch.randn(b, c, 16, 16, generator=torch.Generator().manual_seed(seed))


def _hook_counts(model):
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for n, m in model.named_modules()}


# Defaults on the cnn; cheaper settings on the bigger backbones (two busy CPU cores).
CHEAP = {"Integrated Gradients": {"n_steps": 8}, "Gradient SHAP": {"n_samples": 4}, "Occlusion": {"window": 4, "stride": 4}}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_method_shape_and_finite(make_model, backbone):
    model = make_model(backbone)
    x = _x()
    for method in list_methods():
        options = {} if backbone == "cnn" else CHEAP.get(method, {})
        out = attribute(model, x, torch.tensor([0, 3]), method, forget=[1], **options)
        assert out.shape == (2, 16, 16), method
        assert torch.isfinite(out).all(), method
        assert not torch.all(out == 0), method  # ViT Grad-CAM must not be the zero map


def test_unknown_method_lists_names(make_model):
    with pytest.raises(ValueError) as err:
        attribute(make_model("cnn"), _x(), 0, "LIME")
    for name in METHODS:
        assert name in str(err.value)
    with pytest.raises(TypeError):
        attribute(make_model("cnn"), _x(), 0, "Saliency", n_steps=3)


@pytest.mark.parametrize("method", METHODS)
def test_filter_changes_explanation(make_model, method):
    model = make_model("cnn")
    x = _x()
    plain = attribute(model, x, 2, method, **CHEAP.get(method, {}))
    filtered = attribute(model, x, 2, method, forget=[2], **CHEAP.get(method, {}))
    assert not torch.allclose(plain, filtered, atol=1e-4)


def test_saliency_matches_autograd(make_model):
    model = make_model("cnn", in_chans=3)
    x, target = _x(3, 3), torch.tensor([0, 4, 2])
    xg = x.clone().requires_grad_(True)
    logits = model(xg, forget=[0, 1])
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), xg)
    torch.testing.assert_close(attribute(model, x, target, "Saliency", forget=[0, 1]), grad.abs().sum(1))


def test_integrated_gradients_completeness(make_model):
    model = make_model("cnn")
    x, target = _x(), torch.tensor([1, 3])
    ig = attribute(model, x, target, "Integrated Gradients", forget=[3], n_steps=64)
    with torch.no_grad():
        gap = model(x, [3]) - model(black_baseline(model, x), [3])
    expected = gap.gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(ig.sum(dim=(1, 2)), expected, atol=0.05 * expected.abs().max().item(), rtol=0)


@pytest.mark.parametrize("method", ["Integrated Gradients", "Occlusion"])
def test_per_sample_forget_mask_matches_separate_calls(make_model, method):
    # Captum expands tensor forward args alongside its expanded inputs; rows must stay aligned.
    model = make_model("cnn")
    x = _x(3)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 1], mask[2, [0, 4]] = True, True
    batched = attribute(model, x, 2, method, forget=mask, **CHEAP[method])
    for i in range(3):
        single = attribute(model, x[i : i + 1], 2, method, forget=mask[i : i + 1], **CHEAP[method])
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-4, rtol=1e-4)


def test_forget_spellings_agree(make_model):
    model = make_model("cnn")
    x, mask = _x(), torch.zeros(1, 5, dtype=torch.bool)
    mask[0, [1, 3]] = True
    as_list = attribute(model, x, 0, "Integrated Gradients", forget=[1, 3], n_steps=8)
    for forget in (mask, torch.tensor([1, 3])):  # a [1, N] mask is shared by the whole batch
        torch.testing.assert_close(attribute(model, x, 0, "Integrated Gradients", forget=forget, n_steps=8), as_list)


def test_grad_cam_layers(make_model):
    model = make_model("resnet18")  # 16 px: layer4 and layer3 are 1x1, so the default falls back to layer2
    x = _x()
    torch.testing.assert_close(attribute(model, x, 0, "Layer Grad-CAM"), attribute(model, x, 0, "Layer Grad-CAM", layer="layer2"))
    flat = attribute(model, x, 0, "Layer Grad-CAM", layer="layer4")
    assert torch.allclose(flat, flat[:, :1, :1].expand_as(flat))  # a 1x1 map upsamples to a constant
    with pytest.raises(ValueError, match="no module"):
        attribute(model, x, 0, "Layer Grad-CAM", layer="nope")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_grad_cam_leaves_shared_model_untouched(make_model, backbone):
    model = make_model(backbone)
    hooks = _hook_counts(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    attribute(model, _x(), 1, "Layer Grad-CAM", forget=[0])
    assert _hook_counts(model) == hooks
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_gradient_shap_deterministic_without_global_rng(make_model):
    model = make_model("cnn")
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = attribute(model, _x(), 1, "Gradient SHAP", forget=[2])
    b = attribute(model, _x(), 1, "Gradient SHAP", forget=[2])
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert not torch.equal(a, attribute(model, _x(), 1, "Gradient SHAP", forget=[2], seed=1))


class _RegionModel(nn.Module):
    """Two classes; logit 0 = scale * mean of the top half of the image, logit 1 = 0."""

    def __init__(self):
        super().__init__()
        self.info = tiny_info(num_classes=2)
        self.backbone = nn.Identity()

    def forward(self, x, forget=None):
        score = 4.0 * x[:, :, :8].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_deletion_curve_known_answer():
    model, x = _RegionModel(), torch.ones(1, 1, 16, 16)  # white image; black is -1 after normalisation
    saliency = torch.zeros(16, 16)
    saliency[:8] = torch.arange(128, 0, -1, dtype=torch.float).view(8, 16)  # top half first
    res = insertion_deletion(model, x, saliency, target=0, steps=8)
    assert len(res["fractions"]) == len(res["deletion_curve"]) == len(res["insertion_curve"]) == 9
    deleted = np.minimum(np.round(np.linspace(0, 1, 9) * 256), 128)  # only top-half pixels matter
    expected = 1 / (1 + np.exp(-4.0 * (128 - 2 * deleted) / 128))
    np.testing.assert_allclose(res["deletion_curve"], expected, atol=1e-6)
    assert res["deletion_auc"] == pytest.approx(np.trapezoid(expected, np.linspace(0, 1, 9)))
    reverse = insertion_deletion(model, x, -saliency, target=0, steps=8)
    assert reverse["deletion_auc"] > res["deletion_auc"]


def test_insertion_deletion_faithful_beats_reversed(make_model):
    model = make_model("cnn")
    with torch.no_grad():  # random tiny models have near-constant logits; sharpen the head so ordering shows
        model.backbone.head.weight.mul_(100)
    x = _x(1, seed=3)
    with torch.no_grad():
        target = int(model(x, [4]).argmax())
    ig = attribute(model, x, target, "Integrated Gradients", forget=[4])[0]
    good = insertion_deletion(model, x, ig, target, forget=[4], steps=16)
    bad = insertion_deletion(model, x, -ig, target, forget=[4], steps=16)
    for res in (good, bad):
        assert len(res["deletion_curve"]) == 17 and res["fractions"][0] == 0 and res["fractions"][-1] == 1
        assert 0 <= res["deletion_auc"] <= 1 and 0 <= res["insertion_auc"] <= 1
    assert good["deletion_auc"] < bad["deletion_auc"] - 0.03
    assert good["insertion_auc"] > bad["insertion_auc"] + 0.03
    # Both curves end / start on the same image regardless of the order.
    assert good["deletion_curve"][-1] == pytest.approx(bad["deletion_curve"][-1], abs=1e-6)
    assert good["insertion_curve"][-1] == pytest.approx(bad["insertion_curve"][-1], abs=1e-6)


def test_top_k_sorted(make_model):
    model = make_model("vit")
    out = top_k(model, _x(3), forget=[0], k=3)
    assert len(out) == 3
    for row in out:
        probs = [p for _, p in row]
        assert len(row) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert len({c for c, _ in row}) == 3
    assert len(top_k(model, _x(1), k=99)[0]) == 5


@pytest.mark.parametrize("backbone", ["cnn", "resnet18"])
def test_grad_cam_is_thread_safe(make_model, backbone):
    model = make_model(backbone)
    x = _x(2, seed=5)
    with torch.no_grad():
        expected = model(x, forget=[1])
    hooks = _hook_counts(model)
    stop, failures, runs = threading.Event(), [], [0]

    def explain():
        try:
            for _ in range(4):
                attribute(model, _x(2), 0, "Layer Grad-CAM", forget=[3])
        finally:
            stop.set()

    def predict():
        while not stop.is_set():
            with torch.no_grad():
                out = model(x, forget=[1])
            if not torch.equal(out, expected) or _hook_counts(model) != hooks:
                failures.append(runs[0])
            runs[0] += 1

    threads = [threading.Thread(target=explain), threading.Thread(target=predict)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert runs[0] > 0 and not failures
