"""Validation split (issue 14): held out of training, recorded, checked, used by unlearning; never the test split."""

import json

import pytest
import torch

from wfexplain.checkpoint import CheckpointError, read_manifest, update_manifest
from wfexplain.data import validation_split
from wfexplain.engine import TrainConfig, UnlearnConfig
from wfexplain.pipeline import train_checkpoint, unlearn_checkpoint
from wfexplain.splits import checkpoint_split, checkpoint_train_split, checkpoint_validation_split

RECIPE = TrainConfig(epochs=2, batch_size=16, shift=0.0)
ROUND = UnlearnConfig(steps=24, batch_size=16, lr=5e-2)


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_bar_folder):
    root = tmp_path_factory.mktemp("bars")
    make_bar_folder(root, n_train=40, n_test=8)
    return root


def _train(data, out, **kw):
    return train_checkpoint("imagefolder", "cnn", out, RECIPE, data_dir=str(data), img_size=16, **kw)


def test_validation_split_is_seeded_stratified_and_disjoint():
    targets = torch.arange(100) % 4
    rest, val = validation_split(targets, 20, seed=3)
    assert len(val) == 20 and len(rest) == 80 and not set(rest.tolist()) & set(val.tolist())
    assert torch.bincount(targets[val]).tolist() == [5, 5, 5, 5]
    assert torch.equal(val, validation_split(targets, 20, seed=3)[1])
    assert not torch.equal(val, validation_split(targets, 20, seed=4)[1])
    with pytest.raises(ValueError, match=r"1\.\.99 images"):
        validation_split(targets, 100)


def test_train_holds_out_a_recorded_validation_split_and_never_trains_on_it(data, tmp_path):
    result = _train(data, tmp_path / "ck")
    manifest = read_manifest(tmp_path / "ck")
    v = manifest.validation
    assert v["images"] == 12 and v["seen_by_backbone"] is False and len(v["sha256"]) == 16  # 10% of 120
    assert manifest.train_images == 108
    assert 0 <= manifest.metrics["validation_accuracy"] <= 1 and result["accuracy"] == manifest.metrics["original_accuracy"]
    train = checkpoint_train_split(manifest)
    val = checkpoint_validation_split(manifest)
    assert len(train) == 108 and len(val) == 12
    assert not set(train.indices) & set(val.indices)  # both index the same full training split
    assert torch.bincount(val.targets).tolist() == [4, 4, 4]


def test_no_validation_split_when_asked_and_a_bad_fraction_is_refused(data, tmp_path):
    _train(data, tmp_path / "all", val_fraction=0.0)
    manifest = read_manifest(tmp_path / "all")
    assert manifest.validation is None and manifest.train_images == 120
    assert checkpoint_validation_split(manifest) is None
    with pytest.raises(ValueError, match="one per class"):
        _train(data, tmp_path / "tiny", val_fraction=0.01)
    assert not (tmp_path / "tiny").exists()


def test_unlearning_reports_validation_figures_while_it_runs_and_records_them(trained_checkpoint):
    ck = trained_checkpoint
    split = read_manifest(ck).validation
    seen = []
    result = unlearn_checkpoint(ck, ROUND, progress=lambda s, t, m: seen.append((s, dict(m))))
    steps = [(s, m) for s, m in seen if "phase" not in m]  # the validation pauses and the final evaluation apart
    with_val = [(s, m) for s, m in steps if "val_forget" in m]
    assert with_val and with_val[0][0] == 3 and steps[-1][0] == 24  # refreshed every steps // 8
    assert {"val_forget", "val_retain"} <= set(steps[-1][1]) and seen[-1] == (24, {"phase": "final evaluation"})
    manifest = read_manifest(ck)
    recorded = manifest.metrics["unlearn_val"]
    assert recorded["images"] == 7 and recorded["forget_accuracy_mean"] == result["validation"]["forget_accuracy_mean"]
    assert manifest.validation == split  # the backbone's split is kept, not carved anew


def test_a_checkpoint_without_a_split_gets_one_at_unlearning_time_marked_seen(data, tmp_path):
    _train(data, tmp_path / "old", val_fraction=0.0)
    unlearn_checkpoint(tmp_path / "old", ROUND)
    manifest = read_manifest(tmp_path / "old")
    assert manifest.validation["seen_by_backbone"] is True and manifest.validation["images"] == 12
    assert len(checkpoint_train_split(manifest)) == 120  # the backbone's own training images are unchanged


def test_a_training_split_that_no_longer_yields_the_recorded_images_is_refused(trained_checkpoint):
    ck = trained_checkpoint
    manifest = update_manifest(ck, lambda m: m.replace(validation={**m.validation, "sha256": "0" * 16}))
    with pytest.raises(CheckpointError, match="no longer yields the checkpoint's validation images"):
        checkpoint_validation_split(read_manifest(ck))
    raw = json.loads((ck / "manifest.json").read_text())
    raw["validation"]["images"] = -1
    (ck / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="validation must be"):
        read_manifest(ck)
    assert len(checkpoint_split(manifest, "test")) == 24


def test_evaluate_scores_the_validation_split_and_records_it_apart(trained_checkpoint, data, tmp_path, capsys):
    from wfexplain.cli import main

    ck = trained_checkpoint
    unlearn_checkpoint(ck, ROUND)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--split", "validation", "--json", "--record"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "validation" and report["num_images"] == 7
    metrics = read_manifest(ck).metrics
    assert metrics["validation_evaluation"]["num_images"] == 7 and "evaluation" not in metrics
    _train(data, tmp_path / "none", val_fraction=0.0)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--split", "validation"]) == 2
    assert "records no validation split" in capsys.readouterr().err
