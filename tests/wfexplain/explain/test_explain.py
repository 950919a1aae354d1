import threading
import types

import numpy as np
import pytest
import timm
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn
from torchvision.models import VisionTransformer, mobilenet_v3_small

from wfexplain.data import DatasetInfo
from wfexplain.explain.attributions import METHODS, attribute, black_baseline, insertion_deletion, list_methods, top_k
from wfexplain.explain.gradcam import default_gradcam_layer, gradcam_layers

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

    def __init__(self, info):
        super().__init__()
        self.info = info
        self.backbone = nn.Identity()

    def forward(self, x, forget=None):
        score = 4.0 * x[:, :, :8].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_deletion_curve_known_answer(tiny_info):
    model, x = _RegionModel(tiny_info(num_classes=2)), torch.ones(1, 1, 16, 16)  # white image; black is -1 after normalisation
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


# ---------------------------------------------------------------- Grad-CAM layers of any backbone


def _info(size=32, chans=3):
    return DatasetInfo("tiny", tuple(f"class{i}" for i in range(5)), chans, size, (0.5,) * chans, (0.5,) * chans)


def _ns(module, name, size=32, chans=3):
    """What gradcam_layers / default_gradcam_layer need: .backbone, .backbone_name, .info."""
    return types.SimpleNamespace(backbone=module.eval(), backbone_name=name, info=_info(size, chans))


class _Foreign(nn.Module):
    """A bring-your-own backbone behind the FilteredModel call signature (no gates)."""

    def __init__(self, module, name, size=32):
        super().__init__()
        self.backbone_name, self.info = name, _info(size)
        self.backbone = module.eval().requires_grad_(False)

    def forward(self, x, forget=None):
        return self.backbone(x)


def _x32(b=2, seed=1):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _check_2x2_rule(layers):
    assert layers and all(min(side) >= 2 for _, side in layers)
    assert len({p for p, _ in layers}) == len(layers)


def test_gradcam_layers_timm_resnet10t_last_2x2():
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    hooks = _hook_counts(net)
    layers = gradcam_layers(_ns(net, "timm:resnet10t"))
    _check_2x2_rule(layers)
    paths, sides = [p for p, _ in layers], dict(layers)
    assert paths.index("layer1") < paths.index("layer2") < paths.index("layer3")  # execution order
    assert sides["layer1"] == (8, 8) and sides["layer3"] == (2, 2)
    assert not any(p.startswith(("layer4", "fc", "global_pool")) for p in paths)  # 1x1 at 32 px, head
    assert default_gradcam_layer(_ns(net, "timm:resnet10t")) == paths[-1] == "layer3"
    assert default_gradcam_layer(_ns(net, "timm:resnet10t", size=64)) == "layer4"  # cached per input size
    assert _hook_counts(net) == hooks


def test_gradcam_layers_torchvision_mobilenet_and_timm_convnext():
    torch.manual_seed(0)
    mobile = _ns(mobilenet_v3_small(num_classes=5), "torchvision:mobilenet_v3_small")
    layers = gradcam_layers(mobile)
    _check_2x2_rule(layers)
    assert all(p.startswith("features.") for p, _ in layers)  # no avgpool / classifier
    assert "features.9.block.1" not in dict(layers)  # the stride-2 depthwise conv of block 9 is 1x1
    assert default_gradcam_layer(mobile) == layers[-1][0] == "features.9.block.0"
    for conv_mlp in (True, False):  # convnext_atto's 1x1-conv MLP, or timm's channels-last LayerNorm + Linear one
        net = timm.create_model("convnext_atto", pretrained=False, num_classes=5, conv_mlp=conv_mlp)
        convnext = _ns(net, "timm:convnext_atto")
        layers = gradcam_layers(convnext)
        _check_2x2_rule(layers)
        assert all(h == w for _, (h, w) in layers)  # [B, H, W, C] activations are never taken for [B, C, H, W]
        assert any(p.endswith(".mlp.fc1") for p, _ in layers) == conv_mlp
        assert {"stages.0", "stages.2"} <= set(dict(layers)) and "stages.3" not in dict(layers)
        assert default_gradcam_layer(convnext) == layers[-1][0] == "stages.3.downsample.0"


def test_gradcam_layers_timm_vit_tokens():
    torch.manual_seed(0)
    vit = _Foreign(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32,
                                     patch_size=4), "timm:vit_tiny_patch16_224")
    layers = gradcam_layers(vit)
    norms = [f"blocks.{i}.norm1" for i in range(12)]
    assert [p for p, _ in layers if p.endswith("norm1")] == norms
    assert all(side == (8, 8) for _, side in layers)
    assert default_gradcam_layer(vit) == "blocks.11.norm1"
    cam = attribute(vit, _x32(), 1, "Layer Grad-CAM")
    assert cam.shape == (2, 32, 32) and torch.isfinite(cam).all() and cam.abs().sum() > 0


def test_grad_cam_timm_vit_with_register_tokens():
    torch.manual_seed(0)  # num_prefix_tokens = 1 class + 2 register tokens
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, patch_size=4,
                            depth=2, embed_dim=48, num_heads=2, reg_tokens=2)
    cam = attribute(_Foreign(net, "timm:vit_reg"), _x32(), 2, "Layer Grad-CAM")
    assert torch.isfinite(cam).all() and cam.abs().sum() > 0


def test_gradcam_layers_torchvision_vit_tokens():
    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=5)
    nn.init.normal_(net.heads.head.weight)  # torchvision zero-initialises the head: no gradient at all
    model = _Foreign(net, "torchvision:vit_b_16")
    ln = "encoder.layers.encoder_layer_{}.ln_1"
    assert gradcam_layers(model) == [("conv_proj", (8, 8)), (ln.format(0), (8, 8)), (ln.format(1), (8, 8))]
    assert default_gradcam_layer(model) == ln.format(1)
    x, hooks = _x32(), _hook_counts(model)
    for path, _ in gradcam_layers(model):
        cam = attribute(model, x, 3, "Layer Grad-CAM", layer=path)
        assert cam.shape == (2, 32, 32) and torch.isfinite(cam).all() and cam.abs().sum() > 0, path
    # The hand-written 4-D branch of token models is captum's LayerGradCam.
    xg = x.clone().requires_grad_(True)
    ref = LayerGradCam(model, model.backbone.conv_proj).attribute(xg, target=3, additional_forward_args=(None,),
                                                                  relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (32, 32), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(attribute(model, x, 3, "Layer Grad-CAM", layer="conv_proj"), ref.detach())
    assert _hook_counts(model) == hooks


@pytest.mark.parametrize(("backbone", "size", "expected", "side"), [
    ("cnn", 16, "features.10", (4, 4)), ("resnet18", 16, "layer2", (2, 2)), ("resnet18", 32, "layer3", (2, 2)),
    ("vit", 16, "blocks.5.norm1", (4, 4))])
def test_builtin_default_layers_unchanged(make_model, backbone, size, expected, side):
    model = make_model(backbone, img_size=size)
    hooks = _hook_counts(model)
    assert default_gradcam_layer(model) == expected
    assert dict(gradcam_layers(model))[expected] == side
    assert _hook_counts(model) == hooks


def test_generic_grad_cam_end_to_end_leaves_no_hooks():
    torch.manual_seed(0)
    model = _Foreign(timm.create_model("resnet10t", pretrained=False, num_classes=5), "timm:resnet10t")
    hooks, x = _hook_counts(model), _x32()
    cam = attribute(model, x, torch.tensor([0, 4]), "Layer Grad-CAM")
    assert cam.shape == (2, 32, 32) and torch.isfinite(cam).all() and cam.abs().sum() > 0
    torch.testing.assert_close(cam, attribute(model, x, torch.tensor([0, 4]), "Layer Grad-CAM", layer="layer3"))
    with pytest.raises(ValueError, match=r"no module 'layer9'.*candidates.*layer3"):
        attribute(model, x, 0, "Layer Grad-CAM", layer="layer9")
    assert _hook_counts(model) == hooks


def test_builtin_cnn_explicit_non_default_layer(make_model, monkeypatch):
    model = make_model("cnn")
    hooks, x = _hook_counts(model), _x()
    default = attribute(model, x, 0, "Layer Grad-CAM", forget=[1])
    early = attribute(model, x, 0, "Layer Grad-CAM", forget=[1], layer="features.6")
    assert "features.6" in dict(gradcam_layers(model)) and torch.isfinite(early).all()
    assert not torch.allclose(default, early)
    assert _hook_counts(model) == hooks
    import wfexplain.explain.gradcam as explain_module

    monkeypatch.setattr(explain_module.copy, "deepcopy", lambda *a, **k: pytest.fail("probe not cached"))
    assert gradcam_layers(model) == gradcam_layers(model)


def test_no_gradcam_layer_is_a_clear_error():
    mlp = _ns(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), "mlp", size=8, chans=1)
    assert gradcam_layers(mlp) == []
    with pytest.raises(ValueError, match=r"'mlp'.*8x8"):
        default_gradcam_layer(mlp)
