import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import wfexplain
from wfexplain.checkpoint import CheckpointError, save_checkpoint


@pytest.fixture
def ckpt(tmp_path, make_model):
    model = make_model("cnn")
    save_checkpoint(model, tmp_path / "ck", {"seed": 0, "metrics": {"original_accuracy": 0.5}})
    return model, tmp_path / "ck"


def test_round_trip(ckpt):
    model, path = ckpt
    loaded = wfexplain.load(path)
    assert loaded.backbone_name == "cnn" and loaded.class_names == model.class_names
    for k, v in model.memory.items():
        torch.testing.assert_close(loaded.memory[k], v)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, forget=[1, 2]), model(x, forget=[1, 2]))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["memory_shapes"] == {k: list(v.shape) for k, v in model.memory.items()}
    assert not list(path.glob("*.tmp")), "no temporary files left behind"


def test_half_storage_loads_as_float32(tmp_path, make_model):
    model = make_model("cnn")
    save_checkpoint(model, tmp_path / "h", {}, half=True)
    assert load_file(str(tmp_path / "h" / "model.safetensors"))["fc.weight"].dtype == torch.float16
    loaded = wfexplain.load(tmp_path / "h")
    assert loaded.backbone.fc.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.backbone.fc.weight, model.backbone.fc.weight, atol=1e-2, rtol=1e-3)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        wfexplain.load(tmp_path / "nope")


@pytest.mark.parametrize("name", ["model.safetensors", "memory.safetensors", "manifest.json"])
def test_missing_file_is_named(ckpt, name):
    _, path = ckpt
    (path / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        wfexplain.load(path)


def test_corrupt_weights_name_the_file(ckpt):
    _, path = ckpt
    (path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        wfexplain.load(path)


def test_corrupt_manifest(ckpt):
    _, path = ckpt
    (path / "manifest.json").write_text("{ nope")
    with pytest.raises(CheckpointError, match=r"manifest\.json is not valid JSON"):
        wfexplain.load(path)


def test_unknown_backbone_lists_choices(ckpt):
    _, path = ckpt
    m = json.loads((path / "manifest.json").read_text())
    m["backbone"] = "alexnet"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="unknown backbone 'alexnet'; known: cnn, resnet18, vit"):
        wfexplain.load(path)


def test_shape_mismatch_is_precise(ckpt):
    _, path = ckpt
    state = load_file(str(path / "model.safetensors"))
    state["fc.weight"] = torch.zeros(3, 3)
    del state["head.bias"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        wfexplain.load(path)
    msg = str(e.value)
    assert "model.safetensors" in msg and "missing weights head.bias" in msg
    assert "fc.weight: expected (256, 512), found (3, 3)" in msg


def test_memory_mismatch_with_manifest_classes(ckpt):
    _, path = ckpt
    m = json.loads((path / "manifest.json").read_text())
    m["dataset"]["class_names"] = m["dataset"]["class_names"][:4]  # 4 classes, files hold 5
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="does not match its manifest"):
        wfexplain.load(path)


def test_manifest_records_file_digests(ckpt):
    _, path = ckpt
    files = json.loads((path / "manifest.json").read_text())["files"]
    for name in ("model.safetensors", "memory.safetensors"):
        assert files[name]["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()


def test_files_from_another_checkpoint_are_refused(ckpt, tmp_path, make_model):
    """Same shapes, different content (e.g. a rewrite killed between files): the digest names the file."""
    _, path = ckpt
    other = make_model("cnn")
    with torch.no_grad():
        for p in other.memory.values():
            p.uniform_(0, 1)
    save_checkpoint(other, tmp_path / "other", {})
    (path / "memory.safetensors").write_bytes((tmp_path / "other" / "memory.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"memory\.safetensors does not match its manifest: SHA-256"):
        wfexplain.load(path)


def test_manifest_without_digests_still_loads(ckpt):
    """Checkpoints written before digests were recorded stay loadable."""
    model, path = ckpt
    m = json.loads((path / "manifest.json").read_text())
    del m["files"]
    (path / "manifest.json").write_text(json.dumps(m))
    loaded = wfexplain.load(path)
    for k, v in model.memory.items():
        torch.testing.assert_close(loaded.memory[k], v)
