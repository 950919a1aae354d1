"""CLI behaviour, and the CI-sized end-to-end run on real Fashion-MNIST."""

import json
import subprocess
import sys

import pytest

import wfexplain
from tests import ROOT
from wfexplain.checkpoint import save_checkpoint
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_train_refuses_to_overwrite(e2e_checkpoint, capsys):
    assert main(["train", "--dataset", "mnist", "--out", str(e2e_checkpoint)]) == 1
    assert "already exists (a checkpoint)" in capsys.readouterr().err


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 1  # a runtime failure, not usage
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: checkpoint directory {tmp_path / 'missing'} does not exist"], err


def test_unknown_backbone_lists_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "mnist", "--backbone", "alexnet", "--out", "x"])
    assert "choose from 'cnn', 'resnet18', 'vit'" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list", "--checkpoints", "checkpoints"]) == 0
    out = capsys.readouterr().out
    assert "cnn, resnet18, vit" in out and "fashion-mnist" in out


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert main(argv) == 1 and "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*argv, "--force", "--steps", "5"]) == 0 and out.read_bytes() != before


@pytest.fixture
def small_ckpt(tmp_path, make_model):
    path = tmp_path / "ck"
    save_checkpoint(make_model("cnn"), path, {"train_config": {"epochs": 1}, "seed": 0})
    return path


@pytest.mark.slow
def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"wfexplain {wfexplain.__version__}\n"
    run = subprocess.run([sys.executable, "-m", "wfexplain", "--version"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert (run.returncode, run.stdout) == (0, f"wfexplain {wfexplain.__version__}\n"), run.stderr


def test_top_level_help_names_the_global_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert all(flag in out for flag in ("--version", "-q, --quiet", "-v, --verbose", "exit status")), out


def test_exit_1_for_a_failed_command_2_for_a_refused_command_line(small_ckpt, tmp_path, capsys):
    # Runtime failures: the command line is well formed, the world is not as it expects.
    assert main(["upgrade", "--checkpoint", str(tmp_path / "missing")]) == 1
    assert main(["train", "--dataset", "mnist", "--out", str(small_ckpt), "--epochs", "1"]) == 1  # exists
    err = capsys.readouterr().err
    assert "does not exist" in err and "--force" in err and "Traceback" not in err
    # Usage errors: argparse's (a bad value) and the CLI's own checks against the checkpoint (UsageError).
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--checkpoint", str(small_ckpt), "--samples", "0"])
    assert e.value.code == 2
    assert main(["evaluate", "--checkpoint", str(small_ckpt), "--sets", "5"]) == 2
    err = capsys.readouterr().err
    assert "argument --samples" in err and "error: argument --sets: set sizes must be in 1..4" in err


def test_logging_levels(small_ckpt, capsys):
    info = "already in the current format"
    assert main(["upgrade", "--checkpoint", str(small_ckpt)]) == 0
    err = capsys.readouterr().err
    assert info in err and "done in" not in err  # INFO by default; success is quiet about timing
    for argv in (["-q", "upgrade", "--checkpoint", str(small_ckpt)], ["upgrade", "--checkpoint", str(small_ckpt), "-q"]):
        assert main(argv) == 0
        assert capsys.readouterr().err == ""
    assert main(["upgrade", "--checkpoint", str(small_ckpt) + "-missing", "--quiet"]) == 1
    assert capsys.readouterr().err.startswith("error: ")  # errors survive -q
    for argv in (["-v", "upgrade", "--checkpoint", str(small_ckpt)], ["upgrade", "--checkpoint", str(small_ckpt),
                                                                       "--verbose"]):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert info in err and "done in" in err and f"wfexplain {wfexplain.__version__}: upgrade" in err
    with pytest.raises(SystemExit) as e:
        main(["-q", "-v", "list"])
    assert e.value.code == 2


def test_only_rank_0_logs_info_errors_come_from_every_rank_prefixed(small_ckpt, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["upgrade", "--checkpoint", str(small_ckpt)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["upgrade", "--checkpoint", str(small_ckpt) + "-missing"]) == 1
    assert capsys.readouterr().err.startswith("[rank 1] error: ")


def test_quiet_hides_progress_bars():
    import logging

    from wfexplain.cli.console import bar, logging_to_stderr

    for level, hidden in ((logging.WARNING, True), (logging.INFO, False)):
        with logging_to_stderr(level):
            b, progress = bar("test")
            progress(1, 2, {"loss": 0.5})
            assert b.bar is not None and b.bar.disable is hidden
            b.close()


def test_list_json(capsys):
    assert main(["list", "--json", "--checkpoints", str(ROOT / "checkpoints")]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert set(listed) == {"backbones", "datasets", "checkpoints_dir", "checkpoints", "shipped"}
    assert set(listed["shipped"]) == {"fmnist-cnn", "fmnist-resnet18", "fmnist-vit", "mnist-cnn"}
    assert listed["backbones"] == ["cnn", "resnet18", "vit"] and "fashion-mnist" in listed["datasets"]
    shipped = sorted(p.parent.name for p in (ROOT / "checkpoints").glob("*/manifest.json"))
    assert shipped and listed["checkpoints"] == shipped and "fmnist-cnn" in shipped
