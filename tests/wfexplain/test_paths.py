"""Every file a checkpoint or a cache uses stays inside its directory: a planted symlink is refused, never followed out."""
import json

import pytest
import torch

import wfexplain
from wfexplain import pipeline
from wfexplain.answers import Answers
from wfexplain.atomic import PathEscape, within
from wfexplain.benchmark.comparison import read_benchmark
from wfexplain.benchmark.reports import write_benchmark
from wfexplain.checkpoint import CheckpointError, read_manifest, save_checkpoint
from wfexplain.inference import Predictor


@pytest.fixture
def ck(tmp_path, make_model):
    save_checkpoint(make_model("cnn"), tmp_path / "root" / "ck", {"seed": 0})
    return tmp_path / "root" / "ck"


@pytest.mark.parametrize("name", ["model.safetensors", "memory.safetensors", "manifest.json"])
def test_a_checkpoint_file_that_is_a_symlink_out_of_the_directory_is_refused(ck, tmp_path, name):
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    (ck / name).rename(outside)
    (ck / name).symlink_to(outside)
    with pytest.raises(CheckpointError, match="leads outside"):
        wfexplain.load(ck)


def test_a_symlink_that_stays_inside_is_fine(ck):
    (ck / "model.safetensors").rename(ck / "weights.bin")
    (ck / "model.safetensors").symlink_to("weights.bin")
    assert read_manifest(ck) and wfexplain.load(ck)


def test_a_cache_symlink_never_makes_the_answers_write_outside(ck, tmp_path, monkeypatch):
    monkeypatch.delenv("WFEXPLAIN_CACHE_DIR", raising=False)
    outside = tmp_path / "outside-cache"
    outside.mkdir()
    (ck / "cache").symlink_to(outside)
    model = wfexplain.load(ck)
    answers = Answers(Predictor(model, torch.zeros(4, 1, 16, 16)), ck)
    assert answers.path is None and "leads outside the checkpoint" in answers.note
    answers.fill()
    assert list(outside.iterdir()) == []


def test_a_cache_file_symlink_is_refused_too(ck, tmp_path, monkeypatch):
    monkeypatch.delenv("WFEXPLAIN_CACHE_DIR", raising=False)
    model = wfexplain.load(ck)
    probe = Answers(Predictor(model, torch.zeros(4, 1, 16, 16)), ck)
    (ck / "cache").mkdir()
    probe.path.symlink_to(tmp_path / "victim")
    answers = Answers(Predictor(model, torch.zeros(4, 1, 16, 16)), ck)
    answers.fill()
    assert answers.path is None and not (tmp_path / "victim").exists()


def test_retrain_oracles_and_benchmarks_behind_symlinks_are_refused(ck, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (ck / "retrain").symlink_to(outside)
    with pytest.raises(CheckpointError, match="leads outside"):
        pipeline.oracle_path(ck, [0])
    (outside / "benchmark.json").write_text(json.dumps({"class_names": []}))
    (ck / "benchmark.json").symlink_to(outside / "benchmark.json")
    with pytest.raises(PathEscape):
        read_benchmark(ck)
    with pytest.raises(PathEscape):
        write_benchmark({}, ck)
    (ck / "benchmark-runs").symlink_to(outside)
    from wfexplain.benchmark.scoring import Probe
    from wfexplain.benchmark.store import RunStore

    probe = Probe(torch.zeros(2, 1, 16, 16), torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, 16, 16),
                  torch.zeros(2, dtype=torch.long))
    train = [(torch.zeros(1, 16, 16), 0)]
    with pytest.raises(CheckpointError, match="leads outside"):
        RunStore(ck, read_manifest(ck), train, RunStore.probe_inputs(None, None, probe))
    (ck / "benchmark-runs").unlink()
    store = RunStore(ck, read_manifest(ck), train, RunStore.probe_inputs(None, None, probe))
    store.root.mkdir(parents=True)
    (store.root / "seed0").symlink_to(outside)  # deeper down, where results are written
    with pytest.raises(CheckpointError, match="leads outside"):
        store.put(0, (0,), "finetune", {}, {"metrics": {}, "per_class_accuracy": [], "forget_predictions": [],
                                            "forget_scores": []})
    with pytest.raises(CheckpointError, match="leads outside"):
        store.get_round(0, {})
    assert not list(outside.glob("set0*")) and not list(outside.glob("wf-round*"))


def test_within_resolves_dot_dot_and_symlinks(tmp_path):
    (tmp_path / "a").mkdir()
    assert within(tmp_path / "a", tmp_path / "a" / "x") == (tmp_path / "a" / "x").resolve()
    with pytest.raises(PathEscape):
        within(tmp_path / "a", tmp_path / "a" / ".." / "b")
