"""The fast inference path (issue 16): folded, prefix-cached, baked forward passes equal the hook path."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from wfexplain import bake, wrap
from wfexplain.gates import count_hooks
from wfexplain.inference import Predictor, relative_error

NAMES = [f"c{i}" for i in range(5)]
SIZE = 32

SETS = [None, [0], [1, 3], [0, 2, 4]]


def _random_memory(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(0.2 + 0.8 * torch.rand(a.shape, generator=g))
    return model


def _check(model, x, expected_mode):
    hooks = count_hooks(model.backbone)
    p = Predictor(model, x, chunk=7)  # chunks that do not divide the inputs
    assert p.mode == expected_mode, p.describe()
    with torch.no_grad():
        for s in SETS:
            assert relative_error(p.logits(s), model(x, forget=s)) < 1e-4, (s, p.describe())
        hard = bake(model, [1, 3], hard_threshold=0.5)(x)
        assert relative_error(p.logits([1, 3], hard_threshold=0.5), hard) < 1e-4
    assert count_hooks(model.backbone) == hooks, "the model's own gates are untouched"
    assert count_hooks(p._work) == 0 if p._work is not None else True
    return p


@pytest.mark.parametrize("backbone,mode", [("cnn", "folded+prefix"), ("resnet18", "folded+prefix"), ("vit", "baked+prefix")])
def test_builtin_backbones_take_the_fast_path_exactly(backbone, mode, make_model):
    model = make_model(backbone, img_size=32 if backbone == "resnet18" else 16)
    _random_memory(model)
    x = torch.randn(20, 1, model.info.img_size, model.info.img_size, generator=torch.Generator().manual_seed(1))
    _check(model, x, mode)


@pytest.mark.parametrize("arch,mode", [
    (lambda: timm.create_model("resnet10t", num_classes=5), "folded"),
    (lambda: torchvision.models.resnet18(num_classes=5), "folded+prefix"),
    (lambda: timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=SIZE, patch_size=8, depth=2), "baked+prefix"),
    (lambda: torchvision.models.VisionTransformer(image_size=SIZE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                                  mlp_dim=64, num_classes=5), "baked"),
])
def test_wrapped_foreign_models_take_the_fast_path_exactly(arch, mode, perturbed):
    model = _random_memory(wrap(perturbed(arch()), NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3, std=(0.25,) * 3))
    _check(model, torch.randn(9, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)), mode)


class TwoUses(nn.Module):
    """A convolution whose output feeds its BatchNorm *and* a skip: folding the norm would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn2(self.conv2(torch.relu(self.bn(y)))) + y
        return self.head(z.mean((2, 3)))


def test_a_fold_that_is_not_exact_is_dropped_and_said(perturbed):
    model = _random_memory(wrap(perturbed(TwoUses()), NAMES, input_size=(3, SIZE, SIZE), mean=(0.5,) * 3,
                                std=(0.25,) * 3))
    p = _check(model, torch.randn(6, 3, SIZE, SIZE), "baked")
    assert any("folded is not exact" in n for n in p.notes)


def test_rows_and_reduced_precision_guard(make_model):
    model = _random_memory(make_model("cnn"))
    x = torch.randn(30, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    p = Predictor(model, x)
    rows = torch.tensor([5, 1, 29])
    torch.testing.assert_close(p.logits([2], rows=rows), p.logits([2])[rows])
    strict = Predictor(model, x, precision="bfloat16", min_agreement=1.01)  # no agreement can pass
    assert strict.dtype == torch.float32 and any("bfloat16 refused" in n for n in strict.notes)
    loose = Predictor(model, x, precision="bfloat16", min_agreement=0.0)
    assert loose.dtype == torch.bfloat16 and relative_error(loose.logits([2]), p.logits([2])) < 0.1
    assert p.agreement is None and 0.0 <= loose.agreement <= 1.0 and strict.agreement == loose.agreement  # reported
    with pytest.raises(ValueError, match="precision must be"):
        Predictor(model, x, precision="float8")


def test_a_gate_inside_the_prefix_turns_the_prefix_cache_off(tiny_info):
    from wfexplain.filtering import FilteredModel
    from wfexplain.sites import GateSite

    model = FilteredModel("cnn", tiny_info(), sites=[GateSite("features.0", "channels", 32),
                                                     GateSite("features.5", "channels", 64)])
    p = _check(_random_memory(model), torch.randn(5, 1, 16, 16), "folded")
    assert any("features.0" in n and "inside the prefix" in n for n in p.notes)


@pytest.mark.parametrize("backbone", ["cnn", "vit"])
def test_background_work_gives_way_to_an_interactive_call_between_chunks(backbone, make_model, monkeypatch):
    """The dashboard's precompute (background) yields the working copy between chunks to a session's request, which
    then waits for one chunk at most, not a whole set; both results stay exact (the background re-bakes its set)."""
    import threading
    import time

    from wfexplain import inference

    model = _random_memory(make_model(backbone))
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    p = Predictor(model, x, chunk=4)  # 16 chunks
    assert p._split is not None
    monkeypatch.setattr(inference, "GRACE_S", 0.05)
    rest, started, order = p._split.rest, threading.Event(), []

    def slow_rest(m, h):  # 20 ms a chunk, and who ran it
        order.append("b" if threading.current_thread() is thread else "i")
        started.set()
        time.sleep(0.02)
        return rest(m, h)

    monkeypatch.setattr(p, "_split", inference.Split(p._split.prefix, slow_rest, p._split.modules, p._split.boundary))
    out: dict[str, torch.Tensor] = {}
    thread = threading.Thread(target=lambda: out.setdefault("background", p.logits([0, 2], background=True)))
    thread.start()
    assert started.wait(10)
    out["interactive"] = p.logits([1])  # asked while the background's first chunk runs
    thread.join(30)
    line = "".join(order)
    assert p.yields >= 1 and line.count("i") == line.count("b") == 16, line
    assert line.index("i") <= 2 and "b" not in line[line.index("i"):line.rindex("i")], line  # one chunk's wait, no cuts
    with torch.no_grad():
        for s, key in (([0, 2], "background"), ([1], "interactive")):
            assert relative_error(out[key], model(x, forget=s)) < 1e-4, key


def test_the_layout_is_a_rule_not_a_timing(make_model):
    """channels_last for the small CNN (measured 2.4x faster), contiguous for the rest: load cannot flip it."""
    x = torch.randn(8, 1, 32, 32)
    assert Predictor(_random_memory(make_model("cnn", img_size=32)), x).layout == "channels_last"
    assert Predictor(_random_memory(make_model("resnet18", img_size=32)), x).layout == "contiguous"


def test_auto_precision_tries_bfloat16_only_where_it_was_measured_faster(make_model):
    """On a CPU: the small CNN (3.1x faster in bfloat16) is tried, guarded; ResNet-18 (slower) stays float32."""
    x = torch.randn(8, 1, 32, 32)
    cnn = Predictor(_random_memory(make_model("cnn", img_size=32)), x, precision="auto", min_agreement=0.0)
    resnet = Predictor(_random_memory(make_model("resnet18", img_size=32)), x, precision="auto")
    assert cnn.dtype == torch.bfloat16 and cnn.agreement is not None
    assert resnet.dtype == torch.float32 and resnet.agreement is None
