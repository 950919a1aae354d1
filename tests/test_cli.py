"""CLI behaviour, and the CI-sized end-to-end run on real Fashion-MNIST."""

import json

import pytest

from wfexplain.cli import main

E2E_TRAIN, E2E_TEST = 4000, 1000


@pytest.fixture(scope="module")
def e2e_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "fmnist-cnn-ci"
    assert main(["train", "--dataset", "fashion-mnist", "--out", str(out), "--limit-train", str(E2E_TRAIN),
                 "--epochs", "3"]) == 0
    assert main(["unlearn", "--checkpoint", str(out), "--limit-train", str(E2E_TRAIN), "--steps", "90",
                 "--lr", "0.03", "--eval-limit", "500"]) == 0
    return out


@pytest.mark.slow
def test_end_to_end_real_fashion_mnist(e2e_checkpoint, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(e2e_checkpoint), "--limit", str(E2E_TEST), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "fashion-mnist" and report["backbone"] == "cnn"
    assert report["num_images"] == E2E_TEST
    assert report["original_accuracy"] > 0.75
    single = report["single"]
    assert single["forget_accuracy_mean"] < 0.15, single
    assert single["retain_accuracy_mean"] > single["original_retain_accuracy_mean"] - 0.1, single
    assert single["retain_accuracy_mean"] - single["forget_accuracy_mean"] > 0.6
    assert len(report["forget_matrix"]) == 10 and all(len(r) == 10 for r in report["forget_matrix"])
    manifest = json.loads((e2e_checkpoint / "manifest.json").read_text())
    assert manifest["unlearn_config"]["lr"] == 0.03
    assert manifest["timings"]["unlearn_seconds"] > 0
    assert set(manifest["dataset_fingerprint"]) == {"train", "test"}


def test_evaluate_pairs_json_schema(e2e_checkpoint, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(e2e_checkpoint), "--limit", "200", "--pairs", "--json",
                 "--record"]) == 0
    report = json.loads(capsys.readouterr().out)
    keys = {"forget_accuracy_mean", "forget_accuracy_max", "retain_accuracy_mean", "original_retain_accuracy_mean"}
    assert set(report["single"]) == keys and set(report["pairs"]) == keys
    for v in (*report["single"].values(), *report["pairs"].values(), report["original_accuracy"]):
        assert 0.0 <= v <= 1.0
    assert report["seconds"] > 0
    recorded = json.loads((e2e_checkpoint / "manifest.json").read_text())["metrics"]["evaluation"]
    assert recorded["pairs"] == report["pairs"] and recorded["limit"] == 200


def test_train_refuses_to_overwrite(e2e_checkpoint, capsys):
    assert main(["train", "--dataset", "mnist", "--out", str(e2e_checkpoint)]) == 2
    assert "already exists (a checkpoint)" in capsys.readouterr().err


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_backbone_lists_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "mnist", "--backbone", "alexnet", "--out", "x"])
    assert "choose from 'cnn', 'resnet18', 'vit'" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list", "--checkpoints", "checkpoints"]) == 0
    out = capsys.readouterr().out
    assert "cnn, resnet18, vit" in out and "fashion-mnist" in out


def test_export_command(e2e_checkpoint, tmp_path, capsys):
    out = tmp_path / "exports"
    assert main(["export", "--checkpoint", str(e2e_checkpoint), "--out", str(out), "--forget", "0", "6",
                 "--limit", "200", "--layers", "fc"]) == 0
    printed = capsys.readouterr().out.split()
    names = {p.rsplit("/", 1)[-1] for p in printed}
    assert names == {"memory_heatmaps.png", "memory_heatmaps.svg", "memory_heatmaps.pdf", "memory.csv", "memory.npz",
                     "metrics.csv", "metrics.tex", "baked_forget_0-6.safetensors"}
    assert (out / "memory_heatmaps.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "memory_heatmaps.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in (out / "memory_heatmaps.svg").read_bytes()
    assert b"\\toprule" in (out / "metrics.tex").read_bytes()


def test_remove_command_writes_a_loadable_model_without_the_classes(e2e_checkpoint, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from wfexplain.backbones import create_backbone

    out = tmp_path / "removed.safetensors"
    argv = ["remove", "--checkpoint", str(e2e_checkpoint), "--forget", "0", "6", "--out", str(out), "--steps", "30",
            "--limit", "500", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["forget"] == [0, 6] and report["removed_weights"] > 0 and report["test_images"] == 500
    assert report["removed"]["forget_accuracy"] <= 0.02 and report["removed"]["retain_accuracy"] > 0.6
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["mode"] == "removed" and json.loads(meta["forget"]) == [0, 6]
    assert json.loads(meta["removal"])["steps"] == 30 and int(meta["removed_weights"]) == report["removed_weights"]
    net = create_backbone("cnn", 10, 1, 28)
    net.load_state_dict(load_file(str(out)))
    assert sum(int((p == 0).sum()) for p in net.parameters()) >= report["removed_weights"]
    before = out.read_bytes()
    assert main(argv) == 2 and "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*argv, "--force", "--steps", "5"]) == 0 and out.read_bytes() != before
