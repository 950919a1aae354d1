"""Nothing from a file runs code, and a file cannot make us build (or spend minutes on) a network it does not hold."""
import ast
import json

import pytest
import timm
import torch

import wfexplain
from tests import ROOT
from wfexplain import backbones, pipeline
from wfexplain.backbones import BuildRefused, build_network
from wfexplain.checkpoint import CheckpointError, save_checkpoint
from wfexplain.construction import BuildTimeout, bounded
from wfexplain.importing import import_checkpoint
from wfexplain.upgrade import upgrade


def test_no_code_grants_trust_on_a_files_behalf():
    """The one rule: only the user's own trust=... (or $WFEXPLAIN_TRUSTED_MODULES) imports a factory module."""
    positions = {"build_network": 5, "load": 2, "assemble": 3}  # where trust sits when passed positionally

    def grants(node: ast.Call) -> bool:
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        given = [k.value for k in node.keywords if k.arg == "trust"]
        if name in positions and len(node.args) > positions[name]:
            given.append(node.args[positions[name]])
        # a literal True, or anything but a name passed on (the caller's own trust parameter) or False
        return any(not isinstance(v, ast.Name) and not (isinstance(v, ast.Constant) and v.value is False) for v in given)

    offenders = [f"{p.relative_to(ROOT)}:{node.lineno}" for folder in ("wfexplain", "wfexplain_dashboard", "scripts", "perf")
                 for p in (ROOT / folder).rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
                 if isinstance(node, ast.Call) and grants(node)]
    assert not offenders, offenders


@pytest.fixture
def hostile(tmp_path, make_model):
    """A checkpoint whose manifest names subprocess.getoutput as its architecture, with a command to run."""
    d = tmp_path / "ck"
    save_checkpoint(make_model("cnn"), d, {"seed": 0, "train_config": {"epochs": 1, "batch_size": 8}})
    witness = tmp_path / "pwned"
    m = json.loads((d / "manifest.json").read_text())
    m.update(backbone="subprocess:getoutput", arch_kwargs={"cmd": f"touch {witness}"}, sites=None, heads=None)
    (d / "manifest.json").write_text(json.dumps(m))
    return d, witness


@pytest.mark.parametrize("how", ["load", "retrain", "upgrade", "evaluate-cli", "retrain-cli"])
def test_a_manifest_naming_a_module_never_runs_it(hostile, how, monkeypatch):
    d, witness = hostile
    monkeypatch.delenv("WFEXPLAIN_TRUSTED_MODULES", raising=False)
    if how == "load":
        with pytest.raises(CheckpointError, match="would run its code"):
            wfexplain.load(d)
    elif how == "retrain":
        with pytest.raises(CheckpointError, match="would run its code"):
            pipeline.retrain(d, [0], save=False)
    elif how == "upgrade":
        with pytest.raises(CheckpointError, match="would run its code"):
            upgrade(d)
    else:
        from wfexplain.cli import main

        assert main([how.removesuffix("-cli"), "--checkpoint", str(d), "--forget", "0"][: 3 if how == "evaluate-cli"
                                                                                        else 5]) != 0
    assert not witness.exists()


def test_trusted_modules_are_named_by_the_user(monkeypatch):
    monkeypatch.delenv("WFEXPLAIN_TRUSTED_MODULES", raising=False)
    with pytest.raises(ValueError, match="WFEXPLAIN_TRUSTED_MODULES=torch"):
        build_network("torch.nn:Identity", 2, 1, 8)
    monkeypatch.setenv("WFEXPLAIN_TRUSTED_MODULES", "torch")
    assert isinstance(build_network("torch.nn:Identity", 2, 1, 8), torch.nn.Identity)
    monkeypatch.setenv("WFEXPLAIN_TRUSTED_MODULES", "torchvision")  # a prefix of the name is not the module
    with pytest.raises(ValueError, match="would run its code"):
        build_network("torch.nn:Identity", 2, 1, 8)


SMALL_VIT = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}


@pytest.fixture
def vit_ckpt(tmp_path):
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, in_chans=1, **SMALL_VIT)
    model = wfexplain.wrap(net, ["a", "b", "c"], input_size=(1, 16, 16), mean=(0.5,), std=(0.5,),
                           arch="timm:vit_tiny_patch16_224", arch_kwargs=SMALL_VIT)
    wfexplain.save(model, tmp_path / "vit")
    return tmp_path / "vit"


def test_a_huge_depth_is_refused_at_once_and_remembered(vit_ckpt, monkeypatch):
    m = json.loads((vit_ckpt / "manifest.json").read_text())
    m["arch_kwargs"]["depth"] = 20_000
    m.update(sites=None, heads=None)
    (vit_ckpt / "manifest.json").write_text(json.dumps(m))
    calls = []
    real = backbones._build
    monkeypatch.setattr(backbones, "_build", lambda *a, **k: calls.append(a) or real(*a, **k))
    with pytest.raises(CheckpointError, match=r"more than .* tensors"):
        wfexplain.load(vit_ckpt)
    assert len(calls) == 1  # stopped on the meta device: never built for real
    with pytest.raises(CheckpointError, match="refused before"):
        wfexplain.load(vit_ckpt)
    assert len(calls) == 1  # the second request built nothing


def test_the_budget_counts_elements_and_time():
    with pytest.raises(BuildRefused, match="elements"), bounded({"w": (4,)}), torch.device("meta"):
        torch.nn.Linear(10_000, 1_000)
    with pytest.raises(BuildTimeout, match="took over"), bounded({"w": (4,)}, seconds=0):
        torch.nn.Linear(1, 1)
    torch.nn.Linear(10_000, 10)  # outside the block nothing is counted


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 5}, "may not set num_classes"),
    ({"checkpoint_path": "/etc/passwd"}, "may not set checkpoint_path"),
    ({"no_such_argument": 1}, "cannot be built with arch_kwargs"),
])
def test_arch_kwargs_are_refused_with_their_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_network("timm:resnet10t", 3, 3, 32, kwargs)


def test_import_of_a_huge_embedding_is_refused_without_allocating(tmp_path, make_bar_folder):
    from safetensors.torch import save_file

    make_bar_folder(tmp_path / "data", n_train=2, n_test=2)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, in_chans=1, **SMALL_VIT)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="does not match the network"):
        import_checkpoint("timm:vit_tiny_patch16_224", tmp_path / "w.safetensors", "imagefolder", tmp_path / "out",
                          data_dir=tmp_path / "data", img_size=16, in_chans=1, mean=[0.5], std=[0.5],
                          arch_kwargs={**SMALL_VIT, "embed_dim": 3_000_000})
    assert not (tmp_path / "out").exists()


def test_a_constructor_that_breaks_on_meta_is_built_on_the_cpu_within_the_budget():
    """torchvision's RegNets copy out of a tensor while they are built: the meta rebuild fails, the CPU one is bounded."""
    ref = build_network("torchvision:regnet_x_400mf", 4, 3, 32)
    net = build_network("torchvision:regnet_x_400mf", 4, 3, 32, expect=backbones.weight_shapes(ref))
    assert backbones.weight_shapes(net) == backbones.weight_shapes(ref)


def test_a_build_refused_for_time_is_not_remembered(vit_ckpt, monkeypatch):
    """A busy machine may build in time later: only refusals by size or shape are remembered."""
    import wfexplain.manifest as manifest_module

    real, calls = manifest_module.build_network, []

    def slow_once(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise BuildTimeout("building it took over 60 s")
        return real(*a, **k)

    monkeypatch.setattr(manifest_module, "build_network", slow_once)
    with pytest.raises(CheckpointError, match="took over 60 s"):
        wfexplain.load(vit_ckpt)
    assert wfexplain.load(vit_ckpt) and len(calls) == 2
