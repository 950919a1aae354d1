"""The typed manifest: every malformed field is a CheckpointError naming the file, before any network is built."""

import json
import math

import pytest

import wfexplain
import wfexplain.checkpoint as checkpoint
from wfexplain.checkpoint import CheckpointError, save_checkpoint
from wfexplain.manifest import FORMAT_VERSION, Manifest
from wfexplain.upgrade import upgrade


@pytest.fixture
def ckpt(tmp_path, make_model):
    save_checkpoint(make_model("cnn"), tmp_path / "ck", {"seed": 0, "train_config": {"epochs": 2}})
    return tmp_path / "ck"


def _set(m: dict, path: str, value):
    *parents, last = path.split(".")
    for p in parents:
        m = m[p]
    if value is _DELETE:
        del m[last]
    else:
        m[last] = value


_DELETE = object()

# (field path, value, expected message fragment)
BAD_FIELDS = [
    ("format", "something-else", "format is 'something-else'"),
    ("format_version", "2", "format_version must be a positive integer, found '2'"),
    ("format_version", 0, "format_version must be a positive integer"),
    ("format_version", True, "format_version must be a positive integer"),
    ("format_version", FORMAT_VERSION + 1, "newer than this wfexplain supports"),
    ("surprise", 1, "unknown field(s) 'surprise'"),
    ("backbone", _DELETE, "lacks the field 'backbone'"),
    ("backbone", 7, "backbone must be str"),
    ("backbone", "alexnet", "unknown architecture 'alexnet': use one of cnn, resnet18, vit"),
    ("dataset", [], "dataset must be dict"),
    ("dataset.in_chans", 10_000_000, "in_chans must be in 1..16, found 10,000,000"),
    ("dataset.in_chans", "1", "in_chans must be int"),
    ("dataset.img_size", 1e6, "img_size must be int, found float"),
    ("dataset.img_size", 10**6, "img_size must be in 4..1,024"),
    ("dataset.class_names", ["one"], "class_names must list 2..10,000 non-empty strings, found 1"),
    ("dataset.class_names", [f"c{i}" for i in range(20_000)], "found 20,000 entries"),
    ("dataset.class_names", ["a", "a", "b", "c", "d"], "class_names has duplicates"),
    ("dataset.class_names", ["a", 2, "b", "c", "d"], "class_names must list"),
    ("dataset.mean", [0.5, 0.5], "mean must list 1 finite number(s)"),
    ("dataset.mean", [math.nan], "mean must list 1 finite number(s)"),
    ("dataset.std", [0.0], "std must be positive"),
    ("storage_dtype", "int8", "storage_dtype must be 'float32' or 'float16'"),
    ("memory_shapes", {}, "memory_shapes is empty"),
    ("memory_shapes.fc", [5, 10**9], "memory_shapes['fc'] must be [5, 1..1,048,576]"),
    ("memory_shapes.fc", "256", "memory_shapes['fc'] must be"),
    ("files", _DELETE, "records no valid SHA-256 of model.safetensors"),
    ("files.memory.safetensors", {"sha256": "abc"}, "records no valid SHA-256 of memory.safetensors"),
    ("train_config", {"epochs": -1}, "train_config is not a valid TrainConfig: epochs must be an integer ≥ 1"),
    ("train_config", {"epochz": 3}, "train_config is not a valid TrainConfig"),
    ("unlearn_config", "fast", "unlearn_config must be dict or null"),
    ("seed", -1, "seed must be in 0.."),
    ("train_images", 0, "train_images must be in 1.."),
    ("metrics", [], "metrics must be dict or null"),
    ("retrain_of", "somewhere", "retrain_of must be {model_sha256, forget, seed}"),
    ("versions", {"torch": 2}, "versions must map names to strings"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD_FIELDS])
def test_bad_field_is_named_before_any_model_is_built(ckpt, monkeypatch, field, value, message):
    m = json.loads((ckpt / "manifest.json").read_text())
    if field.startswith("files.memory"):
        m["files"]["memory.safetensors"] = value
    elif field.startswith("memory_shapes.") and field != "memory_shapes":
        m["memory_shapes"]["fc"] = value
    else:
        _set(m, field, value)
    (ckpt / "manifest.json").write_text(json.dumps(m))

    def no_build(*a, **k):
        raise AssertionError("a network was built from an invalid manifest")

    monkeypatch.setattr(checkpoint, "FilteredModel", no_build)
    with pytest.raises(CheckpointError) as e:
        wfexplain.load(ckpt)
    assert str(ckpt / "manifest.json") in str(e.value)
    assert message in str(e.value)


@pytest.mark.parametrize("text", ["[]", "null", "42", '"manifest"'])
def test_manifest_that_is_not_an_object(ckpt, text):
    (ckpt / "manifest.json").write_text(text)
    with pytest.raises(CheckpointError, match="must be a JSON object"):
        wfexplain.load(ckpt)


def test_round_trip_is_lossless(ckpt):
    manifest = checkpoint.read_manifest(ckpt)
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.train_config == {"epochs": 2} and manifest.seed == 0 and not manifest.unlearned


def test_version_1_oracle_is_read_and_upgraded(tmp_path, make_model):
    """Version 1 oracles recorded their checkpoint's path and ``forget`` at the top level."""
    base = tmp_path / "base"
    save_checkpoint(make_model("cnn"), base, {})
    oracle = base / "retrain" / "forget-1-seed0"
    save_checkpoint(make_model("cnn", seed=3), oracle, {"seed": 0})
    m = json.loads((oracle / "manifest.json").read_text())
    m.update({"format_version": 1, "retrain_of": str(base), "forget": [1]})
    (oracle / "manifest.json").write_text(json.dumps(m))
    read = checkpoint.read_manifest(oracle)
    assert read.retrain_of == {"model_sha256": "", "forget": [1], "seed": 0}  # belongs to no checkpoint yet
    upgrade(oracle)
    assert checkpoint.read_manifest(oracle).retrain_of["model_sha256"] == checkpoint.file_sha256(base / "model.safetensors")


def test_shipped_manifests_are_current_and_hashed():
    from pathlib import Path

    paths = sorted(Path("checkpoints").glob("**/manifest.json"))
    assert len(paths) >= 4
    for path in paths:
        raw = json.loads(path.read_text())
        assert raw["format_version"] == FORMAT_VERSION, path
        manifest = Manifest.from_json(raw, str(path))
        for name, digest in manifest.files.items():
            assert checkpoint.file_sha256(path.parent / name) == digest, path.parent / name


def test_a_huge_architecture_in_the_manifest_is_refused_before_it_is_allocated(ckpt):
    """arch_kwargs cannot make us build a network the weight file does not hold: the skeleton is built on meta."""
    m = json.loads((ckpt / "manifest.json").read_text())
    m.update({"backbone": "timm:vit_base_patch16_224", "arch_kwargs": {"embed_dim": 8192, "depth": 48, "num_heads": 8},
              "sites": None, "heads": None})
    (ckpt / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="does not match the network timm:vit_base_patch16_224"):
        wfexplain.load(ckpt)


def test_a_file_swapped_after_its_digest_is_checked_cannot_be_loaded(ckpt, monkeypatch):
    """Tensors are parsed from the bytes that were hashed, not read again."""
    blobs = checkpoint.read_verified(ckpt, checkpoint.read_manifest(ckpt))
    (ckpt / "memory.safetensors").write_bytes(b"swapped after the check")
    model = checkpoint.assemble(ckpt, checkpoint.read_manifest(ckpt), blobs)
    assert model.memory  # built from the verified bytes


def test_in_place_save_refuses_a_backbone_that_changed_since_it_was_loaded(ckpt, make_model):
    model = wfexplain.load(ckpt)
    save_checkpoint(make_model("cnn", seed=5), ckpt, {}, overwrite=True)  # another process replaced it
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    with pytest.raises(CheckpointError, match="changed since it was loaded"):
        save_checkpoint(model, ckpt, {}, overwrite=True, carry=["model.safetensors"],
                        expect={"model.safetensors": model.manifest.files["model.safetensors"]})
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
