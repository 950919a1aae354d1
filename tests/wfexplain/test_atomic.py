"""Crash safety: kill -9 at random moments never leaves a half-replaced directory."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import wfexplain
from wfexplain.atomic import clean_stale, dumps, replace_dir, write_json
from wfexplain.checkpoint import file_sha256

ATOMIC = Path(wfexplain.__file__).with_name("atomic.py")

# A writer that needs no torch (atomic.py loaded by path): fast to start, so many trials are cheap.
LIGHT_WRITER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
    atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)
    target, k = sys.argv[2], 0
    print("ready", flush=True)
    while True:
        k += 1
        with atomic.replace_dir(target, overwrite=True) as tmp:
            for name in ("a", "b", "c"):
                (tmp / name).write_bytes(str(k % 10).encode() * 300_000)
""")

# A writer of real checkpoints: a new backbone and memory (like unlearn --out EXISTING --force),
# alternating with a new memory only, written in place (like an in-place unlearn --force).
CKPT_WRITER = textwrap.dedent("""
    import sys, torch
    from wfexplain.checkpoint import save_checkpoint
    from wfexplain.filtering import FilteredModel
    from wfexplain.data import DatasetInfo
    info = DatasetInfo("tiny", tuple(f"c{i}" for i in range(5)), 1, 16, (0.5,), (0.5,))
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = FilteredModel("cnn", info)
        with torch.no_grad():
            for a in m.alphas.values():
                a.uniform_(0, 1)
        models.append(m)
    print("ready", flush=True)
    k = 0
    while True:
        k += 1
        m = models[k % 2]
        carry = ["model.safetensors", "retrain"] if k % 3 == 0 else []
        save_checkpoint(m, sys.argv[1], {"seed": k}, overwrite=True, carry=carry)
""")


def _kill_at_random(cmd: list[str], rng: random.Random, max_delay: float) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0, max_delay))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_during_directory_swaps_leaves_old_or_new(tmp_path):
    rng = random.Random(0)
    target = tmp_path / "d"
    seen = set()
    for _ in range(20):
        _kill_at_random([sys.executable, "-c", LIGHT_WRITER, str(ATOMIC), str(target)], rng, 0.4)
        if not target.exists():  # killed before its first swap
            continue
        contents = {p.name: p.read_bytes() for p in target.iterdir()}
        assert sorted(contents) == ["a", "b", "c"]
        versions = {data[:1] for data in contents.values()}
        assert len(versions) == 1 and all(len(d) == 300_000 and d == d[:1] * 300_000 for d in contents.values())
        seen |= versions
    assert len(seen) > 1, "the trials should catch several versions"
    with replace_dir(target, overwrite=True) as tmp:  # the next write removes what the killed ones left
        (tmp / "a").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]  # the writers' lock file stays


@pytest.mark.slow
def test_kill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    rng = random.Random(1)
    target = tmp_path / "ck"
    loaded = 0
    for _ in range(5):
        _kill_at_random([sys.executable, "-c", CKPT_WRITER, str(target)], rng, 1.0)
        if target.exists():
            model = wfexplain.load(target)  # raises if files of two versions were mixed
            assert model.manifest.files["model.safetensors"] == file_sha256(target / "model.safetensors")
            loaded += 1
    assert loaded >= 3


def test_clean_stale_keeps_live_writers_and_restores_a_cut_fallback(tmp_path):
    target = tmp_path / "ck"
    live = tmp_path / f".ck.wfx-{os.getpid()}-abcd"
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    dead = tmp_path / f".ck.wfx-{dead_pid}-abcd"
    old = tmp_path / f".ck.wfx-{dead_pid}-beef.old"
    for d in (live, dead, old):
        d.mkdir()
    (old / "manifest.json").write_text("{}")
    clean_stale(target)
    assert live.exists() and not dead.exists()
    assert (target / "manifest.json").read_text() == "{}", "a swap cut between its renames is undone"


def test_replace_dir_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "f").write_text("old")
    with pytest.raises(RuntimeError), replace_dir(target, overwrite=True) as tmp:
        (tmp / "f").write_text("new")
        raise RuntimeError("boom")
    assert (target / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]  # the writers' lock file stays
    with pytest.raises(FileExistsError), replace_dir(target):
        pass


def test_strict_json_never_writes_nan(tmp_path):
    obj = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf"), "e": 2}}
    assert json.loads(dumps(obj)) == {"a": None, "b": [1.0, None], "c": {"d": None, "e": 2}}
    write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_a_checkpoint_left_aside_by_a_cut_fallback_is_restored_and_protected(tmp_path):
    """The two-rename fallback cut between its renames: the next write restores the old directory first,
    so without overwrite it refuses, and with carry it keeps what the old one held."""
    target = tmp_path / "ck"
    aside = tmp_path / f".ck.wfx-{2**22 + 7}-cafe.old"  # a dead writer's pid
    aside.mkdir()
    (aside / "model.safetensors").write_text("old weights")
    with pytest.raises(FileExistsError), replace_dir(target):
        pass
    assert (target / "model.safetensors").read_text() == "old weights"
    with replace_dir(target, overwrite=True, carry=["model.safetensors"]) as tmp:
        (tmp / "memory.safetensors").write_text("new memory")
    assert sorted(p.name for p in target.iterdir()) == ["memory.safetensors", "model.safetensors"]


def test_read_only_files_can_be_carried(tmp_path):
    target = tmp_path / "d"
    with replace_dir(target) as tmp:
        (tmp / "weights").write_text("w")
    (target / "weights").chmod(0o444)
    with replace_dir(target, overwrite=True, carry=["weights"]) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert (target / "weights").read_text() == "w"
