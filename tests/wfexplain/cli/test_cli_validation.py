"""Bad options exit 2 naming the option, before any work, and nothing on disk changes; nothing is overwritten
without --force (exit 1: the command line is fine, the files are in the way)."""

import json
from pathlib import Path

import pytest

from wfexplain.checkpoint import save_checkpoint
from wfexplain.cli import main


@pytest.fixture
def ckpt(tmp_path, make_model):
    path = tmp_path / "ck"
    save_checkpoint(make_model("cnn"), path, {"train_config": {"epochs": 1}, "seed": 0})
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# (argv with CK for the checkpoint and OUT for a fresh directory, the option the message must name)
BAD = [
    (["evaluate", "--checkpoint", "CK", "--limit", "-3"], "--limit"),
    (["evaluate", "--checkpoint", "CK", "--limit", "0"], "--limit"),
    (["evaluate", "--checkpoint", "CK", "--limit", "3"], "--limit"),  # fewer than the 5 classes
    (["evaluate", "--checkpoint", "CK", "--limit", "abc"], "--limit"),
    (["evaluate", "--checkpoint", "CK", "--hard-threshold", "5"], "--hard-threshold"),
    (["evaluate", "--checkpoint", "CK", "--hard-threshold", "nan"], "--hard-threshold"),
    (["evaluate", "--checkpoint", "CK", "--seed", "-1"], "--seed"),
    (["unlearn", "--checkpoint", "CK", "--max-set-size", "50"], "--max-set-size"),
    (["unlearn", "--checkpoint", "CK", "--max-set-size", "5"], "--max-set-size"),
    (["unlearn", "--checkpoint", "CK", "--eps", "-1"], "--eps"),
    (["unlearn", "--checkpoint", "CK", "--eps", "0"], "--eps"),
    (["unlearn", "--checkpoint", "CK", "--ce-cap", "-0.5"], "--ce-cap"),
    (["unlearn", "--checkpoint", "CK", "--lr", "inf"], "--lr"),
    (["unlearn", "--checkpoint", "CK", "--steps", "1.5"], "--steps"),
    (["unlearn", "--checkpoint", "CK", "--batch-size", "1"], "--batch-size"),
    (["unlearn", "--checkpoint", "CK", "--eval-limit", "0"], "--eval-limit"),
    (["unlearn", "--checkpoint", "CK", "--eval-limit", "4"], "--eval-limit"),
    (["unlearn", "--checkpoint", "CK", "--limit-train", "100"], "--limit-train"),  # < one batch of 256
    (["unlearn", "--checkpoint", "CK", "--workers", "-2"], "--workers"),
    (["train", "--dataset", "mnist", "--out", "OUT", "--limit-train", "0"], "--limit-train"),
    (["train", "--dataset", "mnist", "--out", "OUT", "--limit-train", "64"], "--limit-train"),
    (["train", "--dataset", "mnist", "--out", "OUT", "--epochs", "0"], "--epochs"),
    (["train", "--dataset", "mnist", "--out", "OUT", "--label-smoothing", "1"], "--label-smoothing"),
    (["train", "--dataset", "imagefolder", "--out", "OUT", "--img-size", "100000"], "--img-size"),
    (["train", "--dataset", "imagefolder", "--out", "OUT", "--in-chans", "2"], "--in-chans"),
    (["benchmark", "--checkpoint", "CK", "--seeds", "0"], "--seeds"),
    (["benchmark", "--checkpoint", "CK", "--train-limit", "2"], "--train-limit"),
    (["benchmark", "--checkpoint", "CK", "--forget", "-1"], "--forget"),
    (["benchmark", "--checkpoint", "CK", "--forget", "7"], "--forget"),
    (["benchmark", "--checkpoint", "CK", "--methods", "magic"], "--methods"),
    (["benchmark", "--checkpoint", "CK", "--byo", "no-path"], "--byo"),
    (["retrain", "--checkpoint", "CK", "--forget", "5"], "--forget"),
    (["evaluate", "--checkpoint", "CK", "--device", "gpu"], "--device"),
    (["retrain", "--checkpoint", "CK", "--forget", "1", "--seed", "-4"], "--seed"),
    (["export", "--checkpoint", "CK", "--out", "OUT", "--forget", "7"], "--forget"),
    (["export", "--checkpoint", "CK", "--out", "OUT", "--hard-threshold", "-0.1"], "--hard-threshold"),
    (["remove", "--checkpoint", "CK", "--out", "OUT.safetensors", "--forget", "7"], "--forget"),
    (["remove", "--checkpoint", "CK", "--out", "OUT.safetensors", "--forget", "0", "1", "2", "3", "4"], "--forget"),
    (["remove", "--checkpoint", "CK", "--out", "OUT", "--forget", "1"], "--out"),
    (["remove", "--checkpoint", "CK", "--out", "OUT.safetensors", "--forget", "1", "--threshold", "0"], "--threshold"),
    (["remove", "--checkpoint", "CK", "--out", "OUT.safetensors", "--forget", "1", "--steps", "-1"], "--steps"),
    (["remove", "--checkpoint", "CK", "--out", "OUT.safetensors", "--forget", "1", "--limit", "3"], "--limit"),
]


@pytest.mark.parametrize(("argv", "option"), BAD, ids=[" ".join(a[::2][:1] + a[-2:]) for a, _ in BAD])
def test_bad_option_exits_2_naming_it_and_writes_nothing(ckpt, tmp_path, capsys, argv, option):
    out = tmp_path / "new"
    before = snapshot(tmp_path)
    argv = [str(ckpt) if a == "CK" else str(out) + a[3:] if a.startswith("OUT") else a for a in argv]
    with pytest.raises(SystemExit) as e:  # argparse's own exit for per-option checks
        rc = main(argv)
        raise SystemExit(rc)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before and not out.exists() and not out.with_suffix(".safetensors").exists()


def test_unlearn_refuses_to_replace_trained_memory_or_an_existing_out(ckpt, tmp_path, capsys):
    m = json.loads((ckpt / "manifest.json").read_text())
    m["unlearn_config"] = {"steps": 10}
    from wfexplain.checkpoint import update_manifest
    from wfexplain.manifest import Manifest

    update_manifest(ckpt, lambda _: Manifest.from_json(m))
    other = tmp_path / "other"
    save_checkpoint_copy = snapshot(tmp_path)
    assert main(["unlearn", "--checkpoint", str(ckpt)]) == 1
    assert "already holds trained memory matrices" in capsys.readouterr().err
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["unlearn", "--checkpoint", str(ckpt), "--out", str(other)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert snapshot(tmp_path) == {**save_checkpoint_copy, "other/keep.txt": b"mine"}


def test_unwritable_out_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--dataset", "mnist", "--out", str(blocker / "sub"), "--epochs", "1"]) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_train_refuses_an_existing_checkpoint(ckpt, capsys):
    before = snapshot(ckpt)
    assert main(["train", "--dataset", "mnist", "--out", str(ckpt), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "already exists (a checkpoint)" in err and "--force" in err
    assert snapshot(ckpt) == before


def test_export_refuses_existing_files(ckpt, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--no-metrics", "--formats", "png"]) == 0
    before = snapshot(out)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--no-metrics", "--formats", "png"]) == 1
    assert "already holds memory_heatmaps.png" in capsys.readouterr().err
    assert snapshot(out) == before
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--no-metrics", "--formats", "png",
                 "--force"]) == 0


def test_benchmark_refuses_to_replace_a_larger_table(ckpt, capsys):
    (ckpt / "benchmark.json").write_text(json.dumps({"forget_classes": [0, 1, 2, 3, 4], "seeds": 3}))
    before = snapshot(ckpt)
    assert main(["benchmark", "--checkpoint", str(ckpt), "--forget", "0", "--seeds", "1", "--methods", "wf"]) == 1
    assert "would replace it with less" in capsys.readouterr().err
    assert snapshot(ckpt) == before


def test_an_internal_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    """A bug surfaces as one line naming the exception, exit 1; the traceback only under -v."""
    import wfexplain.cli.manage as manage

    def broken(args):
        raise KeyError("wf")

    monkeypatch.setattr(manage, "cmd_list", broken)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "internal error (KeyError: 'wf')" in err and "Traceback" not in err
    assert main(["list", "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err
