"""torchrun (2 CPU processes, gloo) against single-process runs on a tiny generated image folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wfexplain import cli, load
from wfexplain import distributed as dist
from wfexplain.engine import _loader

UNLEARN = ["--steps", "30", "--batch-size", "16", "--lr", "0.05", "--seed", "3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained_bars, bar_data):
    """A work folder, the shared tiny CNN's data folder and a copy of the model (trained_bars)."""
    root = tmp_path_factory.mktemp("dist")
    ckpt = Path(shutil.copytree(trained_bars, root / "base"))
    return root, bar_data, ckpt


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "wfexplain", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_unlearn_two_processes_match_one(setup):
    root, data, ckpt = setup
    single, double = root / "single", root / "double"
    assert cli.main(["unlearn", "--checkpoint", str(ckpt), "--out", str(single), "--data-dir", str(data), *UNLEARN]) == 0
    run = torchrun("unlearn", "--checkpoint", str(ckpt), "--out", str(double), "--data-dir", str(data), *UNLEARN)
    assert run.returncode == 0, run.stderr[-3000:]
    # Both ranks checked their memory against each other before rank 0 wrote it.
    assert "identical on all 2 process(es)" in run.stderr
    assert run.stderr.count("saved ") == 1 and "done in" not in run.stderr  # only rank 0 logs, no timing without -v
    a, b = load_file(single / "memory.safetensors"), load_file(double / "memory.safetensors")
    assert a.keys() == b.keys()
    moved = max((1 - v).abs().max().item() for v in a.values())
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 0.1  # the round actually trained the memory
    assert diff < 1e-3, f"2-process memory differs from 1-process by {diff}"
    assert sorted(p.name for p in double.iterdir()) == ["history.csv", "manifest.json", "memory.safetensors", "model.safetensors"]


@pytest.mark.slow
def test_evaluate_two_processes_equal_one(setup, capsys):
    _, data, ckpt = setup
    args = ["evaluate", "--checkpoint", str(ckpt), "--data-dir", str(data), "--pairs", "--json"]
    capsys.readouterr()
    assert cli.main(args) == 0
    single = json.loads(capsys.readouterr().out)
    run = torchrun(*args)
    assert run.returncode == 0, run.stderr[-3000:]
    double = json.loads(run.stdout)  # exactly one JSON object: only rank 0 prints
    single.pop("seconds"), double.pop("seconds")
    assert single.pop("inference").startswith("folded") and double.pop("inference") == "hooks, streamed"  # same numbers
    assert double == single


@pytest.mark.slow
def test_evaluate_three_processes_with_uneven_shards(setup, capsys):
    _, data, ckpt = setup
    args = ["evaluate", "--checkpoint", str(ckpt), "--data-dir", str(data), "--limit", "20", "--json"]
    capsys.readouterr()
    assert cli.main(args) == 0
    single = json.loads(capsys.readouterr().out)
    run = torchrun(*args, nproc=3)  # 20 images over 3 ranks: shards of 6, 7, 7
    assert run.returncode == 0, run.stderr[-3000:]
    double = json.loads(run.stdout)
    single.pop("seconds"), double.pop("seconds")
    assert single.pop("inference").startswith("folded") and double.pop("inference") == "hooks, streamed"  # same numbers
    assert double == single


@pytest.mark.slow
def test_train_under_torchrun_writes_one_loadable_checkpoint(setup):
    root, data, _ = setup
    out = root / "ddp-train"
    run = torchrun("train", "--dataset", "imagefolder", "--data-dir", str(data), "--img-size", "16", "--out", str(out),
                   "--epochs", "2", "--batch-size", "16", "--lr", "0.01")
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "manifest.json", "memory.safetensors", "model.safetensors"]
    model = load(out)
    assert model.manifest.metrics["original_accuracy"] > 0.5  # learnable toy data


@pytest.mark.slow
def test_failing_rank_fails_the_run_and_writes_nothing(setup):
    root, data, ckpt = setup
    broken = root / "broken-data"
    shutil.copytree(data, broken)
    bad = broken / "train" / "middle" / "7.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = root / "never"
    run = torchrun("unlearn", "--checkpoint", str(ckpt), "--out", str(out), "--data-dir", str(broken), *UNLEARN)
    assert run.returncode != 0
    assert "error: cannot read image" in run.stderr and "7.png" in run.stderr  # the failing rank names the file
    assert "FAILED" in run.stderr  # torchrun's summary (how the other rank ends depends on timing)
    assert not (out / "manifest.json").exists()
    assert not out.exists() or not any(out.iterdir())


def test_batch_must_split_over_ranks_and_halves():
    with pytest.raises(ValueError, match="divisible by 2"):
        _loader(torch.utils.data.TensorDataset(torch.zeros(8, 1)), 7, seed=0, multiple=2)


def test_single_process_helpers_are_identity():
    x = torch.arange(6)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert torch.equal(dist.interleave(x), x) and torch.equal(dist.gather_shards(x, 6), x)
    assert dist.shard(5) == range(5)
    assert dist.any_rank(True) and not dist.any_rank(False)
    assert len(dist.check_identical({"a": torch.ones(3)}, "memory")) == 16


def test_resolve_device_errors_are_clear():
    assert dist.resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="choose cpu, cuda"):
        dist.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            dist.resolve_device("cuda")


def test_cli_rejects_cuda_without_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cli.main(["evaluate", "--checkpoint", "checkpoints/fmnist-cnn", "--device", "cuda"]) == 1  # not usage
    assert "no CUDA GPU" in capsys.readouterr().err
