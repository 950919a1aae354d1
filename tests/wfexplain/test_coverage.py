"""Foreign layouts: batch-folded (windowed) attention and channels-first norms gated exactly or refused naming the
layer; sites chosen with sites=/exclude= (GoogLeNet's aux heads); the coverage report of wrap, import and list."""

import re
import warnings

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import wfexplain
from wfexplain import bake, wrap
from wfexplain.api import InertSitesWarning, UngatedLayersWarning
from wfexplain.cli import main
from wfexplain.gates import expand
from wfexplain.sites import GateSite

NAMES = [f"c{i}" for i in range(5)]

KW = {"mean": (0.5,) * 3, "std": (0.25,) * 3}

# Tiny instances of the families a tester found failing with bare shape errors (or refused): name -> (build, side,
# kinds that must be gated, kinds that must sit on a batch-folded activation).
FAMILIES = {
    "timm:swin": (lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=5, img_size=32, window_size=4,
                                            depths=(1, 1), num_heads=(1, 2), embed_dim=16), 32,
                  {"heads", "features"}, {"heads"}),
    "timm:swinv2": (lambda: timm.create_model("swinv2_tiny_window8_256", num_classes=5, img_size=32, window_size=4,
                                              depths=(1, 1), num_heads=(1, 2), embed_dim=16), 32,
                    {"heads", "features"}, {"heads"}),
    "timm:beit": (lambda: timm.create_model("beit_base_patch16_224", num_classes=5, img_size=32, patch_size=8, depth=1,
                                            embed_dim=32, num_heads=2), 32, {"heads", "features", "residual"}, set()),
    "timm:mobilevit_xxs": (lambda: timm.create_model("mobilevit_xxs", num_classes=5), 64,
                           {"heads", "features", "residual", "norm_act"}, {"heads", "features", "residual"}),
    "timm:maxxvit_rmlp_nano_rw_256": (lambda: timm.create_model("maxxvit_rmlp_nano_rw_256", num_classes=5, img_size=64),
                                      64, {"channels", "heads", "features", "residual", "norm_act"}, {"heads"}),
    "timm:caformer_s18": (lambda: timm.create_model("caformer_s18", num_classes=5), 64,
                          {"channels", "heads", "features"}, set()),
    "timm:davit": (lambda: timm.create_model("davit_tiny", num_classes=5, depths=(1, 1, 1, 1)), 64,
                   {"channels", "heads", "features"}, {"heads"}),
    "timm:gcvit_xxtiny": (lambda: timm.create_model("gcvit_xxtiny", num_classes=5, img_size=64), 64,
                          {"channels", "heads", "features", "residual"}, {"heads"}),
}


def randomise(model: wfexplain.FilteredModel, seed: int = 1) -> wfexplain.FilteredModel:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(torch.rand(a.shape, generator=g))
    return model


def assert_exact_per_sample(model: wfexplain.FilteredModel, side: int) -> None:
    """A batch with a different forget set per sample equals each sample's own baked network."""
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        batched, plain = model(x, forget=mask), model(x)
        assert (batched[:2] - plain[:2]).abs().max() > 1e-3 * plain.abs().max(), "the filter must change the output"
        for i, forget in enumerate(([0], [2, 3], None)):
            baked = bake(model, forget)(x[i:i + 1]) if forget else plain[i:i + 1]
            torch.testing.assert_close(batched[i:i + 1], baked, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_windowed_attention_and_channels_first_norms_are_gated_exactly(name, perturbed):
    build, side, kinds, folded = FAMILIES[name]
    torch.manual_seed(0)
    net = build().eval() if name == "timm:beit" else perturbed(build())  # perturbed, BEiT's output hardly varies
    model = randomise(wrap(net, NAMES, input_size=(3, side, side), **KW))
    cov = wfexplain.coverage(model)
    assert kinds <= {s.kind for s in model.sites}
    assert {s.kind for s in model.sites if s.path in cov.folded} == folded
    assert all(r > 1 for r in cov.folded.values())
    assert_exact_per_sample(model, side)


def test_functional_attention_is_refused_naming_the_layer(perturbed):
    """torchvision's Swin passes qkv/proj weights to a function: no hook can see its heads."""
    net = perturbed(torchvision.models.SwinTransformer([4, 4], 16, [1, 1], [1, 2], [4, 4], num_classes=5))
    with pytest.warns(UngatedLayersWarning, match=r"features\.1\.0\.attn \(its proj is never called as a module"):
        model = randomise(wrap(net, NAMES, input_size=(3, 64, 64), **KW))
    skipped = dict(wfexplain.coverage(model).skipped)
    assert skipped["features.1.0.attn"].endswith("heads not gated here")
    assert {s.kind for s in model.sites} == {"features"}
    assert_exact_per_sample(model, 64)
    with pytest.raises(ValueError, match=r"features\.1\.0\.attn: its proj is never called as a module"):
        wrap(wfexplain.ungated_copy(net), NAMES, input_size=(3, 64, 64), **KW,
             sites=[GateSite("features.1.0.attn.proj", "heads", 1, 16)])


class Attention(nn.Module):
    """timm-style attention (qkv, proj, num_heads) over [B', N, C]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ChannelNorm(nn.LayerNorm):
    """A LayerNorm over dim 1 of NCHW whose name does not say so."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Windowed(nn.Module):
    """A conv stem, a channels-first norm, attention over 2x2 windows folded into the batch, a head."""

    def __init__(self, sample_major: bool):
        super().__init__()
        self.sample_major = sample_major
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = ChannelNorm(16)
        self.conv = nn.Conv2d(16, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.attn = Attention(16, 2)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.bn(self.conv(self.norm(self.stem(x))))  # [B, C, 8, 8]
        b, c, h, w = x.shape
        win = x.view(b, c, 2, h // 2, 2, w // 2)  # 4 windows of 16 tokens
        order = (0, 2, 4, 3, 5, 1) if self.sample_major else (2, 4, 0, 3, 5, 1)
        tokens = self.attn(win.permute(*order).reshape(-1, (h // 2) * (w // 2), c))  # [B*4, 16, C] or [4*B, 16, C]
        return self.head(tokens.reshape(-1, 4 * 16, c).mean(1) if self.sample_major
                         else tokens.reshape(4, b, 16, c).permute(1, 0, 2, 3).reshape(b, -1, c).mean(1))


def test_batch_folded_layouts_are_gated_per_sample_or_refused_with_the_reason(perturbed):
    with pytest.warns(UngatedLayersWarning, match=r"norm \(its activation is \[2, 16, 8, 8\], whose dim -1 does not "
                                                  r"hold its 16 features \(a channels-first layout"):
        good = randomise(wrap(perturbed(Windowed(sample_major=True)), NAMES, input_size=(3, 32, 32), **KW))
    cov = wfexplain.coverage(good)
    assert cov.folded == {"attn.proj": 4} and {s.path for s in good.sites} == {"bn", "attn.proj"}
    assert_exact_per_sample(good, 32)

    with pytest.warns(UngatedLayersWarning, match=r"attn \(folds the batch \(\[B\*4, \.\.\.\]\) in another order than "
                                                  r"sample-major.*heads not gated here"):
        bad = wrap(perturbed(Windowed(sample_major=False)), NAMES, input_size=(3, 32, 32), **KW)
    assert {s.path for s in bad.sites} == {"bn"}
    with pytest.raises(ValueError, match=r"cannot be gated as given .*attn: folds the batch"):
        wrap(perturbed(Windowed(sample_major=False)), NAMES, input_size=(3, 32, 32), **KW,
             sites=[GateSite("attn.proj", "heads", 2, 8)])


def test_a_gate_that_does_not_fit_its_activation_names_the_site():
    """Never a bare broadcasting error from inside a hook."""
    site = GateSite("blocks.0.attn.proj", "heads", 2, 8)
    with pytest.raises(ValueError, match=r"'blocks\.0\.attn\.proj' \(heads\): its activation is \[6, 4, 16\], whose "
                                         r"dim 0 is not the batch of 4"):
        expand(torch.ones(4, 2), site, torch.ones(6, 4, 16))
    with pytest.raises(ValueError, match=r"'norm' \(channels\): its activation is \[2, 8, 4, 4\], whose dim 1"):
        expand(torch.ones(2, 16), GateSite("norm", "channels", 16), torch.ones(2, 8, 4, 4))
    assert expand(torch.ones(2, 2), site, torch.ones(6, 4, 16)).shape == (6, 1, 16)  # 3 windows per sample


def test_aux_heads_run_only_in_training_are_excluded_by_name():
    net = torchvision.models.googlenet(num_classes=5, aux_logits=True, init_weights=True).eval()
    with pytest.raises(ValueError, match=re.escape("aux1, aux2 never run in an eval-mode forward pass (a training-only "
                                                   "branch, such as an auxiliary classifier), so their gates would "
                                                   "never fire: exclude them (exclude=['aux1', 'aux2']; wfexplain "
                                                   "import --exclude aux1 aux2)")):
        wrap(net, NAMES, input_size=(3, 64, 64), **KW)
    model = wrap(net, NAMES, input_size=(3, 64, 64), **KW, exclude=["aux1", "aux2"])
    assert not any(s.path.startswith("aux") for s in model.sites)
    skipped = dict(wfexplain.coverage(model).skipped)
    assert skipped["aux1.fc1"] == skipped["aux2.conv.bn"] == "excluded (exclude=, --exclude)"


def test_sites_and_exclude_take_module_paths_and_their_prefixes(perturbed):
    net = perturbed(torchvision.models.resnet18(num_classes=5))
    with pytest.warns(UngatedLayersWarning, match="not among the sites asked for"):
        model = wrap(net, NAMES, input_size=(3, 32, 32), **KW, sites=["layer4"], exclude=["layer4.1.bn2"])
    assert {s.path for s in model.sites} == {"layer4.0.bn1", "layer4.0.bn2", "layer4.0.downsample.1", "layer4.1.bn1"}
    net = wfexplain.ungated_copy(net)
    with pytest.raises(ValueError, match="exclude: 'layer9' is no module of this ResNet"):
        wrap(net, NAMES, input_size=(3, 32, 32), **KW, exclude=["layer9"])
    with pytest.raises(ValueError, match="sites: 'avgpool' holds no gate site"):
        wrap(net, NAMES, input_size=(3, 32, 32), **KW, sites=["avgpool"])


class DeadBranch(nn.Module):
    """A side branch whose output is multiplied by zero: its gate changes nothing."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.side, self.side_bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.bn(self.stem(x))
        x = x + 0.0 * self.side_bn(self.side(x))
        return self.head(x.mean((2, 3)))


def test_gates_that_never_change_the_output_are_flagged(perturbed):
    with pytest.warns(InertSitesWarning, match=r"never changed the output in the probe .*: side_bn$"):
        model = wrap(perturbed(DeadBranch()), NAMES, input_size=(3, 16, 16), **KW)
    cov = wfexplain.coverage(model)
    assert cov.inert == ["side_bn"] and {s.path for s in model.sites} == {"bn", "side_bn"}
    assert any(line.startswith("  no effect: side_bn: gated, but zeroing") for line in cov.lines())


def test_the_coverage_report_counts_per_stage_and_kind(perturbed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InertSitesWarning)
        resnet = wrap(perturbed(torchvision.models.resnet18(num_classes=5)), NAMES, input_size=(3, 32, 32), **KW)
        vit = wrap(perturbed(timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=8,
                                               depth=2)), NAMES, input_size=(3, 32, 32), **KW)
    cov = wfexplain.coverage(resnet)
    assert cov is wfexplain.coverage(resnet)  # recorded by wrap
    assert [(r["stage"], r["kind"], r["sites"], r["components"]) for r in cov.stages] == [
        ("bn1", "channels", 1, 64), ("layer1", "channels", 4, 256), ("layer2", "channels", 5, 640),
        ("layer3", "channels", 5, 1280), ("layer4", "channels", 5, 2560)]
    lines = cov.lines()
    assert lines[0].startswith("coverage: 20 gate sites, 4,800 components in 5 stages; 0 layers left ungated;")
    assert lines[1].split() == ["stage", "channels"] and lines[3].split() == ["layer1", "4", "(256)"]
    table = wfexplain.coverage(vit).table()
    assert [r["stage"] for r in table] == ["patch_embed", "blocks.0", "blocks.1", "norm"]
    assert table[1] == {"stage": "blocks.0", "features": "2 (960)", "residual": "1 (192)", "heads": "1 (3)"}


@pytest.mark.slow
def test_import_excludes_aux_heads_and_list_reports_the_checkpoint_coverage(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, name in enumerate(("a", "b", "c")):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(2):
                img = np.clip(rng.normal(60 + 70 * k, 40, size=(64, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img, "RGB").save(tmp_path / "data" / split / name / f"{i}.png")
    torch.manual_seed(0)
    net = torchvision.models.googlenet(num_classes=3, aux_logits=True, init_weights=True)
    save_file(net.state_dict(), str(tmp_path / "googlenet.safetensors"))
    argv = ["import", "--arch", "torchvision:googlenet", "--arch-kwargs", '{"aux_logits": true}', "--weights",
            str(tmp_path / "googlenet.safetensors"), "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"),
            "--img-size", "64", "--in-chans", "3", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25",
            "--out", str(tmp_path / "ck")]
    assert main(argv) == 1
    assert "exclude them (exclude=['aux1', 'aux2']; wfexplain import --exclude aux1 aux2)" in capsys.readouterr().err
    assert main([*argv, "--exclude", "aux1", "aux2"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"coverage: \d+ gate sites, [\d,]+ components in \d+ stages; \d+ layers left ungated", err)
    assert re.search(r"ungated: aux1\.conv\.bn, aux1\.fc1, aux2\.conv\.bn, aux2\.fc1: excluded", err)
    assert re.search(r"\n.*inception3a +\d+ \([\d,]+\)\n", err)
    assert main(["list", "--checkpoint", str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ungated: aux1, aux2: never run in an eval-mode forward pass; not among the checkpoint's gate "
                     r"sites", out)
    assert re.search(r"\n  inception3a +\d+ \([\d,]+\)\n", out)
