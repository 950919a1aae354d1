"""Classifier heads found from what reaches the logits (aux heads included), never gated; saves that load back."""

import warnings

import pytest
import timm
import torch
import torchvision
from timm.models.volo import VOLO
from torch import nn

import wfexplain
from wfexplain import bake, wrap
from wfexplain.checkpoint import CheckpointError
from wfexplain.heads import HeadGuessWarning, find_heads, trace_heads

NAMES = [f"c{i}" for i in range(5)]
SIZE = 32


def _stem() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())


class AuxFirst(nn.Module):
    """An auxiliary classifier registered before the head; the forward pass adds both."""

    def __init__(self):
        super().__init__()
        self.stem = _stem()
        self.aux = nn.Linear(8, 5)
        self.hidden = nn.Linear(8, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        h = self.stem(x)
        return self.head(torch.relu(self.hidden(h))) + 0.5 * self.aux(h)


class HiddenFcAfterHead(nn.Module):
    """A hidden layer named ``fc`` as wide as the classes, registered after the real head."""

    def __init__(self):
        super().__init__()
        self.stem = _stem()
        self.head = nn.Linear(5, 5)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.stem(x))))


class NormedLogits(nn.Module):
    """A Linear whose logits go through a BatchNorm1d: a per-class affine, so both are heads."""

    def __init__(self):
        super().__init__()
        self.stem = _stem()
        self.classifier = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 5), nn.BatchNorm1d(5))

    def forward(self, x):
        return self.classifier(self.stem(x))


def tiny_volo() -> nn.Module:
    return VOLO(layers=(1, 1, 1, 1), img_size=SIZE, num_classes=5, embed_dims=(32, 64, 64, 64), num_heads=(1, 2, 2, 2),
                stem_hidden_dim=16)


CASES = {  # network -> the heads tracing must find, main classifier first
    "volo": (tiny_volo, ["head", "aux_head"]),
    "deit distilled": (lambda: timm.create_model("deit_tiny_distilled_patch16_224", num_classes=5, img_size=SIZE,
                                                 patch_size=8, depth=1), ["head", "head_dist"]),
    "aux first": (AuxFirst, ["head", "aux"]),
    "hidden fc after head": (HiddenFcAfterHead, ["head"]),
    "normed logits": (NormedLogits, ["classifier.2", "classifier.3"]),
    "torchvision vgg": (lambda: torchvision.models.vgg11(num_classes=5), ["classifier.6"]),
    "torchvision mobilenet": (lambda: torchvision.models.mobilenet_v3_small(num_classes=5), ["classifier.3"]),
}


def _wrapped(net: nn.Module, **kw) -> wfexplain.FilteredModel:
    return wrap(net, NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_every_layer_feeding_the_logits_is_a_head_and_never_gated(name, perturbed):
    torch.manual_seed(0)
    build, heads = CASES[name]
    net = perturbed(build())
    assert find_heads(net, 5, (3, SIZE, SIZE)) == heads
    assert find_heads(net, 5) == heads  # the input size guessed from the network
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wfexplain.api.UngatedLayersWarning)
        model = _wrapped(net)
    assert model.heads == heads
    assert not [s.path for s in model.sites if any(s.path == h or s.path.startswith(h + ".") for h in heads)]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(0.2 + 0.8 * torch.rand(a.shape, generator=g))
        x = torch.randn(3, 3, SIZE, SIZE, generator=g)
        for c in (0, 3):
            gated = model(x, forget=c)
            torch.testing.assert_close(bake(model, c)(x), gated, atol=1e-5, rtol=1e-4)


def test_a_filter_no_longer_masks_its_own_logit_through_an_aux_head(perturbed):
    """The old name-based finder gated AuxFirst.aux as a hidden layer (it is not the last Linear registered)."""
    torch.manual_seed(0)
    model = _wrapped(perturbed(AuxFirst()))
    assert "aux" not in {s.path for s in model.sites} and "hidden" in {s.path for s in model.sites}
    with torch.no_grad():
        for a in model.alphas.values():
            a.zero_()  # every gate closed: the stem's features and the hidden layer are zero
        closed = model(torch.randn(2, 3, SIZE, SIZE), forget=2)
    net = model.backbone
    expected = net.head.bias + 0.5 * net.aux.bias  # the aux head's own weights untouched by the filter
    torch.testing.assert_close(closed, expected.expand(2, 5))


def test_an_explicit_head_that_leaves_an_aux_head_gated_is_refused(perturbed):
    net = perturbed(tiny_volo())
    with pytest.raises(ValueError, match=r"reaches the logits .*aux_head \(features\).*"
                                         r"head=\['head', 'aux_head'\], --head head aux_head\)"):
        _wrapped(net, head="head")
    model = _wrapped(net, head=["head", "aux_head"])  # the failed wrap left no gates behind
    assert model.heads == ["head", "aux_head"]


def test_tracing_restores_modes_and_reports_the_output_width(perturbed):
    net = perturbed(AuxFirst()).train()
    trace = trace_heads(net, (3, SIZE, SIZE))
    assert trace is not None and trace.width == 5 and trace.heads == ("head", "aux")
    assert all(m.training for m in net.modules())
    assert find_heads(net, 4, (3, SIZE, SIZE)) == []  # a [B, 5] output has no head for 4 classes
    squeeze = torchvision.models.squeezenet1_1(num_classes=5)  # a 1x1 convolution, then ReLU and pooling
    assert find_heads(squeeze, 5) == ["classifier.1"]


def test_a_network_that_cannot_run_at_the_input_size_is_named_in_one_line():
    with pytest.raises(ValueError, match=r"^VOLO cannot run on inputs of \(3, 64, 64\) \(C, H, W\): [^\n]+$"):
        wrap(tiny_volo(), NAMES, input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.25,) * 3)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 5)

    def forward(self, x, y):
        return self.fc(x) + y


def test_an_untraceable_network_falls_back_to_the_usual_names_with_a_warning():
    with pytest.warns(HeadGuessWarning, match="guessed them from the usual names"):
        assert find_heads(TwoInputs(), 5) == ["fc"]


@pytest.mark.slow
def test_regnet_imports_saves_and_loads_back_with_identical_logits(tmp_path, make_bar_folder, perturbed):
    """torchvision RegNets cannot be built on the meta device: load falls back to the CPU (issue: every load failed)."""
    from safetensors.torch import save_file

    from wfexplain.cli import main

    make_bar_folder(tmp_path / "data", n_train=2, n_test=2)
    torch.manual_seed(0)
    net = perturbed(torchvision.models.regnet_x_400mf(num_classes=3))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    out = tmp_path / "ck"
    assert main(["import", "--arch", "torchvision:regnet_x_400mf", "--weights", str(tmp_path / "w.safetensors"),
                 "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--in-chans", "3", "--img-size",
                 "32", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25", "--out", str(out)]) == 0
    loaded = wfexplain.load(out)
    assert loaded.heads == ["fc"]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    with pytest.raises(Exception, match="meta"), torch.device("meta"):  # what every load used to hit
        torchvision.models.regnet_x_400mf(num_classes=3)


class Scaled(nn.Module):
    """A network whose output depends on a buffer outside its state dict: a rebuilt copy computes otherwise."""

    def __init__(self):
        super().__init__()
        self.stem = _stem()
        self.head = nn.Linear(8, 5)
        self.register_buffer("scale", torch.ones(1), persistent=False)

    def forward(self, x):
        return self.head(self.stem(x)) * self.scale


def scaled() -> nn.Module:
    return Scaled()


def test_a_save_that_does_not_load_back_is_never_swapped_in(tmp_path, monkeypatch, perturbed):
    torch.manual_seed(0)
    good = _wrapped(perturbed(Scaled()), arch=f"{__name__}:scaled")
    wfexplain.save(good, tmp_path / "ck", trust=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}
    odd = perturbed(Scaled())
    odd.scale.fill_(3.0)
    model = _wrapped(odd, arch=f"{__name__}:scaled")
    with pytest.raises(CheckpointError, match=r"loads back with other logits \(unfiltered: relative error"):
        wfexplain.save(model, tmp_path / "ck", overwrite=True, trust=True)
    monkeypatch.setattr(wfexplain.api, "load", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(CheckpointError, match="cannot be loaded back, so it was not saved: RuntimeError: boom"):
        wfexplain.save(good, tmp_path / "ck", overwrite=True, trust=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ck"]
