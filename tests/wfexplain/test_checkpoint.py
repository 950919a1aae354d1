import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import wfexplain
from wfexplain.checkpoint import CheckpointError, read_manifest, save_checkpoint, update_manifest
from wfexplain.upgrade import upgrade


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


def rehash(path):
    """Record the current files' digests (as if the manifest had been written for them)."""
    m = json.loads((path / "manifest.json").read_text())
    for name in ("model.safetensors", "memory.safetensors"):
        m["files"][name]["sha256"] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(m))


def test_changed_weights_fail_the_digest(ckpt):
    _, path = ckpt
    (path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match its manifest: SHA-256"):
        wfexplain.load(path)


def test_flipped_byte_is_refused(ckpt):
    _, path = ckpt
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-7] ^= 0x01  # a weight's low bit: the file still parses
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match its manifest"):
        wfexplain.load(path)


def test_corrupt_weights_name_the_file(ckpt):
    _, path = ckpt
    (path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    rehash(path)
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
    with pytest.raises(CheckpointError, match="unknown architecture 'alexnet': use one of cnn, resnet18, vit"):
        wfexplain.load(path)


def test_shape_mismatch_is_precise(ckpt):
    _, path = ckpt
    state = load_file(str(path / "model.safetensors"))
    state["fc.weight"] = torch.zeros(3, 3)
    del state["head.bias"]
    save_file(state, str(path / "model.safetensors"))
    rehash(path)
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
    with pytest.raises(CheckpointError, match=r"memory_shapes\['features.1'\] must be \[4, "):
        wfexplain.load(path)


def test_memory_file_header_checked_against_manifest(ckpt):
    _, path = ckpt
    memory = load_file(str(path / "memory.safetensors"))
    memory["fc"] = memory["fc"][:, :10].contiguous()
    save_file(memory, str(path / "memory.safetensors"))
    rehash(path)
    with pytest.raises(CheckpointError, match=r"memory\.safetensors does not match its manifest: shape mismatch fc"):
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


@pytest.mark.parametrize("edit", ["delete files", "delete one", "empty digest", "version 1 without digests"])
def test_digests_are_mandatory(ckpt, edit):
    """Removing the digests does not bypass the check; `upgrade` records them explicitly."""
    model, path = ckpt
    m = json.loads((path / "manifest.json").read_text())
    if edit == "delete files":
        del m["files"]
    elif edit == "delete one":
        del m["files"]["memory.safetensors"]
    elif edit == "empty digest":
        m["files"]["model.safetensors"]["sha256"] = ""
    else:
        m["format_version"] = 1
        del m["files"]
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"records no valid SHA-256 .*wfexplain upgrade"):
        wfexplain.load(path)
    assert upgrade(path) and not upgrade(path)  # changes once, then nothing to do
    loaded = wfexplain.load(path)
    for k, v in model.memory.items():
        torch.testing.assert_close(loaded.memory[k], v)
    assert json.loads((path / "manifest.json").read_text())["format_version"] == 2


def test_upgrade_refuses_files_that_fail_their_recorded_digest(ckpt):
    _, path = ckpt
    m = json.loads((path / "manifest.json").read_text())
    del m["files"]["memory.safetensors"]
    (path / "manifest.json").write_text(json.dumps(m))
    (path / "model.safetensors").write_bytes(b"x" * 100)
    with pytest.raises(CheckpointError, match="does not match the digest its manifest recorded; not upgrading"):
        upgrade(path)


def test_save_refuses_an_existing_checkpoint(ckpt, make_model):
    _model, path = ckpt
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = make_model("cnn", seed=1)
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(other, path, {})
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    save_checkpoint(other, path, {}, overwrite=True)
    loaded = wfexplain.load(path)
    torch.testing.assert_close(loaded.backbone.fc.weight, other.backbone.fc.weight)


def test_overwrite_drops_derived_files_and_carry_keeps_them(ckpt, make_model):
    model, path = ckpt
    (path / "retrain").mkdir()
    (path / "retrain" / "x.txt").write_text("oracle")
    (path / "benchmark.json").write_text("{}")
    save_checkpoint(model, path, {}, overwrite=True, carry=["model.safetensors", "retrain"])
    assert (path / "retrain" / "x.txt").read_text() == "oracle" and not (path / "benchmark.json").exists()
    wfexplain.load(path)
    save_checkpoint(make_model("cnn", seed=2), path, {}, overwrite=True)
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "memory.safetensors", "model.safetensors"]
    assert not [p for p in path.parent.iterdir() if ".wfx-" in p.name], "no temporaries left"


def test_update_manifest_keeps_everything_else(ckpt):
    _, path = ckpt
    (path / "benchmark.json").write_text("{}")
    update_manifest(path, lambda m: m.replace(metrics={**m.metrics, "note": 1.5}))
    assert read_manifest(path).metrics["note"] == 1.5 and (path / "benchmark.json").read_text() == "{}"
    wfexplain.load(path)


def test_a_checkpoint_recording_no_sites_is_read_with_the_layers_its_memory_holds(tmp_path):
    """Checkpoints made before the residual gates record no sites: they load with the layers their memory holds."""
    from wfexplain.data import DatasetInfo
    from wfexplain.filtering import FilteredModel
    from wfexplain.sites import discover_sites, find_heads

    info = DatasetInfo("x", tuple("abcde"), 1, 16, (0.5,), (0.5,))
    full = FilteredModel("vit", info)
    old_kinds = [s for s in discover_sites(full.backbone, find_heads(full.backbone, 5))
                 if s.kind == "heads" or s.path.endswith(".mlp.fc1")]
    old = FilteredModel("vit", info, sites=old_kinds)
    save_checkpoint(old, tmp_path / "ck", {"seed": 0})
    raw = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    raw["sites"] = None  # as the shipped checkpoints of the first version wrote them
    (tmp_path / "ck" / "manifest.json").write_text(json.dumps(raw))
    model = wfexplain.load(tmp_path / "ck")
    assert [s.path for s in model.sites] == [s.path for s in old_kinds] and len(model.sites) == 12
    assert len(full.sites) == 26  # what discovery finds today
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x, forget=[1]), old(x, forget=[1]))
