"""Bring your own classifier: automatic gate sites on torchvision and timm models, gated == baked, the probe."""

import pytest
import timm
import torch
import torchvision
from torch import nn

import wfexplain
from wfexplain import bake, wrap
from wfexplain.data import DatasetInfo
from wfexplain.filtering import FilteredModel
from wfexplain.gates import count_hooks
from wfexplain.sites import GateSite

NAMES = [f"c{i}" for i in range(5)]
SIZE = 32

ARCHS = {
    "torchvision:resnet18": lambda: torchvision.models.resnet18(num_classes=5),
    "torchvision:mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=5),
    "torchvision:efficientnet_b0": lambda: torchvision.models.efficientnet_b0(num_classes=5),
    "torchvision:VisionTransformer": lambda: torchvision.models.VisionTransformer(
        image_size=SIZE, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5),
    "timm:resnet10t": lambda: timm.create_model("resnet10t", num_classes=5),
    "timm:convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=5),
    "timm:mobilenetv3_small_050": lambda: timm.create_model("mobilenetv3_small_050", num_classes=5),
    "timm:efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=5),
    "timm:vit_tiny_patch16_224": lambda: timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=SIZE,
                                                           patch_size=4),
    "timm:deit_tiny_distilled_patch16_224": lambda: timm.create_model(
        "deit_tiny_distilled_patch16_224", num_classes=5, img_size=SIZE, patch_size=4, depth=2),
    "timm:convnext_atto_ols": lambda: timm.create_model("convnext_atto_ols", num_classes=5, conv_mlp=False),
    "timm:vit LayerScale": lambda: timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=SIZE, patch_size=8,
                                                     depth=2, init_values=0.1),
}
# Kinds each architecture must show (the fused and attention kinds are the point of the list).
EXPECTED_KINDS = {
    "torchvision:VisionTransformer": {"mha", "features", "residual"},
    "timm:mobilenetv3_small_050": {"norm_act", "channels"},
    "timm:efficientnet_b0": {"norm_act", "channels"},
    "timm:vit_tiny_patch16_224": {"heads", "features", "residual"},
    "timm:deit_tiny_distilled_patch16_224": {"heads", "features", "residual"},
    "timm:vit LayerScale": {"heads", "features", "residual"},
    "timm:convnext_atto_ols": {"channels", "features"},
}


@pytest.fixture
def wrapped(perturbed):
    """``wrapped(name)``: the architecture ``ARCHS[name]``, perturbed and wrapped, with seeded random alphas."""

    def make(name: str) -> wfexplain.FilteredModel:
        torch.manual_seed(0)
        model = wrap(perturbed(ARCHS[name]()), NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for a in model.alphas.values():
                a.copy_(torch.rand(a.shape, generator=g))
        return model

    return make


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHS))
def test_gated_equals_baked_on_foreign_architectures(name, wrapped):
    model = wrapped(name)
    assert EXPECTED_KINDS.get(name, {"channels"}) <= {s.kind for s in model.sites}
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with torch.no_grad():
        plain = model(x)
        gated = model(x, forget=[1, 3])
        baked_net = bake(model, [1, 3])
        baked = baked_net(x)
    assert (gated - plain).abs().max() > 1e-3 * plain.abs().max(), "the filter must change the output"
    assert float((gated - baked).abs().max() / gated.abs().max()) < 1e-4
    assert type(baked_net) is type(model.backbone) and set(baked_net.state_dict()) == set(before)
    assert count_hooks(baked_net) == 0 and count_hooks(model.backbone) > 0
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"bake changed the shared network at {k}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHS))
def test_the_classifier_head_is_never_gated(name, wrapped):
    model = wrapped(name)
    assert model.heads
    for site in model.sites:
        for head in model.heads:
            assert not (site.path == head or site.path.startswith(head + ".")), (site, head)
    heads = [model.backbone.get_submodule(h) for h in model.heads]
    assert any(isinstance(m, nn.Linear) and m.out_features == 5 for h in heads for m in h.modules())


def test_distilled_heads_are_both_found(wrapped):
    model = wrapped("timm:deit_tiny_distilled_patch16_224")
    assert set(model.heads) == {"head", "head_dist"}


def test_probe_catches_a_gate_that_never_fires(perturbed):
    """nn.MultiheadAttention never calls out_proj as a module: a hook there would be a silent no-op."""
    net = perturbed(ARCHS["torchvision:VisionTransformer"]())
    site = GateSite("encoder.layers.encoder_layer_0.self_attention.out_proj", "features", 32)
    with pytest.raises(ValueError, match=r"never applied .*self_attention\.out_proj"):
        wrap(net, NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3, sites=[site])


def test_probe_catches_a_gate_after_the_fused_activation(perturbed):
    """Gating a timm BatchNormAct2d's output (after its activation) is not a change of weights."""
    net = perturbed(ARCHS["timm:mobilenetv3_small_050"]())
    site = GateSite("bn1", "channels", net.bn1.num_features)
    with pytest.raises(ValueError, match=r"gated != baked at bn1 \(channels"):
        wrap(net, NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3, sites=[site])


def test_sites_as_a_callable_and_head_override(perturbed):
    net = perturbed(ARCHS["timm:resnet10t"]())
    model = wrap(net, NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3,
                 sites=lambda m: [GateSite("bn1", "channels", m.bn1.num_features)])
    assert [s.path for s in model.sites] == ["bn1"]
    with pytest.raises(ValueError, match="inside the classifier head"):
        wrap(wfexplain.ungated_copy(net), NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3, head="layer4",
             sites=[GateSite("layer4.0.bn1", "channels", 512)])


def test_a_foreign_module_is_not_accepted_as_a_builtin_backbone():
    info = DatasetInfo("x", tuple(NAMES), 3, SIZE, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match=r"is not wfexplain's 'cnn' backbone .*wfexplain\.wrap"):
        FilteredModel("cnn", info, timm.create_model("resnet10t", num_classes=5))


def test_wrong_output_size_is_refused(perturbed):
    net = perturbed(ARCHS["timm:resnet10t"]())
    with pytest.raises(ValueError, match="no classifier head with 4 outputs found in ResNet"):
        wrap(net, NAMES[:4], input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ValueError, match=r"expected \(2, 4\) logits"):
        wrap(net, NAMES[:4], input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3, head="fc")


def test_builtin_backbones_use_the_same_discovery():
    for name in ("cnn", "resnet18", "vit"):
        model = FilteredModel(name, DatasetInfo("x", tuple(NAMES), 1, 16, (0.5,), (0.5,)))
        kinds = {s.kind for s in model.sites}
        assert kinds == {"cnn": {"channels", "features"}, "resnet18": {"channels"},
                         "vit": {"heads", "features", "residual"}}[name]


def _sites(model) -> dict[str, str]:
    return {s.path: s.kind for s in model.sites}


def test_transformers_gate_every_write_into_the_residual_stream(perturbed):
    """Heads and hidden units alone leave the class token a path around every gate (issue 14)."""
    vit = _sites(FilteredModel("vit", DatasetInfo("x", tuple(NAMES), 1, 16, (0.5,), (0.5,))))
    for i in range(6):
        assert vit[f"blocks.{i}.attn.proj"] == "heads" and vit[f"blocks.{i}.mlp.fc1"] == "features"
        assert vit[f"blocks.{i}.ls1"] == "residual" and vit[f"blocks.{i}.mlp.fc2"] == "features"
    assert vit["patch_embed.norm"] == "residual" and vit["norm"] == "features" and "head" not in vit
    tv = _sites(wrap(perturbed(ARCHS["torchvision:VisionTransformer"]()), NAMES, input_size=(3, SIZE, SIZE),
                     mean=(0.5,) * 3, std=(0.25,) * 3))
    layer = "encoder.layers.encoder_layer_1"
    assert tv[f"{layer}.dropout"] == "residual" and tv[f"{layer}.mlp.3"] == "features"
    assert tv["encoder.ln"] == "features"
    ls = wrap(perturbed(ARCHS["timm:vit LayerScale"]()), NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3,
              std=(0.25,) * 3)
    with torch.no_grad():
        for a in ls.alphas.values():
            a.uniform_(0.2, 1.0)
    baked = bake(ls, [1, 3])
    before = dict(ls.backbone.named_parameters())["blocks.0.ls1.gamma"]
    after = dict(baked.named_parameters())["blocks.0.ls1.gamma"]
    assert not torch.equal(before, after)  # a LayerScale takes its residual gate itself ...
    assert torch.equal(dict(ls.backbone.named_parameters())["blocks.0.attn.proj.bias"],
                       dict(baked.named_parameters())["blocks.0.attn.proj.bias"])  # ... the projection's rows do not
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.testing.assert_close(baked(x), ls(x, forget=[1, 3]), atol=1e-5, rtol=1e-4)


def test_a_residual_site_must_sit_after_a_residual_writer(perturbed):
    net = perturbed(ARCHS["timm:vit_tiny_patch16_224"]())
    with pytest.raises(ValueError, match=r"blocks\.0\.drop_path1.*cannot be gated as 'residual'"):
        wrap(net, NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3,
             sites=[GateSite("blocks.0.drop_path1", "residual", 192)])
    with pytest.raises(ValueError, match=r"its writer blocks\.0\.attn\.proj has 192 channels, the site says 96"):
        wrap(wfexplain.ungated_copy(net), NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3,
             sites=[GateSite("blocks.0.ls1", "residual", 96)])


class SeqFirst(nn.Module):
    """A conv stem and a sequence-first TransformerEncoderLayer (activations [L, B, F])."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 8, stride=8)
        self.norm = nn.BatchNorm2d(16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        t = self.norm(self.stem(x)).flatten(2).permute(2, 0, 1)  # [L, B, C]
        return self.head(self.block(t).mean(0))


def test_sequence_first_blocks_are_left_ungated_with_a_warning_and_per_sample_sets_stay_exact(perturbed):
    net = perturbed(SeqFirst())
    with pytest.warns(wfexplain.api.UngatedLayersWarning, match=r"block\.linear1 \(a sequence-first"):
        model = wrap(net, NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3)
    assert {s.kind for s in model.sites} == {"channels", "mha"}
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(torch.rand(a.shape, generator=g))
        x = torch.randn(3, 3, SIZE, SIZE, generator=g)
        mask = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
        batched = model(x, forget=mask)
        for i, s in enumerate(([0], [2, 3], None)):
            torch.testing.assert_close(batched[i:i + 1], model(x[i:i + 1], forget=s), atol=1e-5, rtol=1e-5)


def test_a_wrong_head_dim_is_refused(perturbed):
    net = perturbed(ARCHS["timm:vit_tiny_patch16_224"]())
    with pytest.raises(ValueError, match=r"3 heads x head_dim 63 do not make the module's 192 features"):
        wrap(net, NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3,
             sites=[GateSite("blocks.0.attn.proj", "heads", 3, 63)])


@pytest.mark.slow
def test_hidden_layers_of_a_classifier_sequential_are_gated_and_its_last_layer_is_the_head(perturbed):
    model = wrap(perturbed(torchvision.models.vgg11(num_classes=5)), NAMES, input_size=(3, SIZE, SIZE),
                 mean=(0.5,) * 3, std=(0.25,) * 3)
    assert model.heads == ["classifier.6"]
    assert {"classifier.0", "classifier.3"} <= {s.path for s in model.sites}
