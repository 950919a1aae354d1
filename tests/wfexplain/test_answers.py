"""Precomputed answers (issue 16): singles and pairs once per checkpoint and inputs, on disk, keyed by digests,
signed with a per-install key and validated on read (a forged or damaged file is never shown)."""

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import wfexplain
import wfexplain.answers as answers_module
import wfexplain.integrity as integrity
from wfexplain.answers import CACHE_ENV, KEY_ENV, Answers, singles_and_pairs
from wfexplain.checkpoint import save_checkpoint
from wfexplain.forget import key as set_key
from wfexplain.inference import Predictor
from wfexplain.integrity import create_key, install_key


@pytest.fixture
def ckpt(tmp_path, monkeypatch, make_model):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    model = make_model("cnn", num_classes=4)
    save_checkpoint(model, tmp_path / "ck", {"seed": 0})
    return tmp_path / "ck", torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def _answers(path, x):
    return Answers(Predictor(wfexplain.load(path), x), path)


@pytest.mark.slow
def test_fill_computes_every_single_and_pair_once_and_a_restart_reads_them(ckpt):
    path, x = ckpt
    a = _answers(path, x)
    assert a.total == 1 + 4 + 6 and a.done == 0 and a.path.parent == path / "cache"
    seen = []
    result = a.fill(progress=lambda i, n, m: seen.append(i))
    assert result == {"computed": 11, "total": 11, "cancelled": False, "path": a.path} and seen[-1] == 11
    model = wfexplain.load(path)
    labels, conf = a.get((1, 3))
    with torch.no_grad():
        reference = model(x, forget=[1, 3]).softmax(1)
    assert torch.equal(labels.long(), reference.argmax(1)) and torch.allclose(conf.float(), reference.max(1).values, atol=1e-3)
    assert (labels.dtype, conf.dtype) == (torch.int16, torch.float16)  # 4 bytes an image, whatever the classes
    again = _answers(path, x)  # a new session, or a restart
    assert again.rejected == 0 and again.note == ""
    assert again.done == 11 and again.has((3, 1)) and again.fill()["computed"] == 0
    assert torch.equal(again.get((1, 3))[0], labels) and torch.equal(again.get((1, 3))[1], conf)


@pytest.mark.slow
def test_answers_are_keyed_by_the_weights_and_the_inputs(ckpt, tmp_path, make_model):
    path, x = ckpt
    a = _answers(path, x)
    a.fill()
    assert _answers(path, x + 1).done == 0  # other images
    other = make_model("cnn", seed=5, num_classes=4)
    save_checkpoint(other, path, {"seed": 0}, overwrite=True)  # other weights in the same directory
    assert _answers(path, x).done == 0


@pytest.mark.slow
def test_a_damaged_file_is_ignored_and_an_unwritable_cache_only_keeps_answers_in_memory(ckpt, tmp_path, monkeypatch):
    path, x = ckpt
    a = _answers(path, x)
    a.fill()
    a.path.write_bytes(b"not safetensors")
    b = _answers(path, x)
    assert b.done == 0 and "unreadable" in b.note and b.fill()["computed"] == 11
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    c = _answers(path, x)
    assert c.fill()["computed"] == 11 and "memory only" in c.note and c.has((0, 2))


def test_estimates_use_a_stratified_share_and_names_are_canonical(ckpt):
    path, x = ckpt
    a = _answers(path, x)
    targets = torch.arange(12) % 4
    rows, labels, conf = a.estimate((0, 1, 2), targets, share=0.34)
    assert bool(((conf >= 0.25) & (conf <= 1)).all())
    assert len(rows) == 4 and sorted(targets[rows].tolist()) == [0, 1, 2, 3]
    assert torch.equal(labels, a.get((0, 1, 2))[0][rows].long())
    assert set_key((3, 1, 1)) == "1-3" and set_key(()) == "" and len(singles_and_pairs(30)) == 31  # no pairs past 20


def _file(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118


@pytest.mark.slow
def test_a_forged_file_with_the_right_name_is_ignored_counted_and_recomputed(ckpt):
    """T-shirt/top at 100% forget accuracy: a file rewritten so that forgetting class 0 changes nothing."""
    path, x = ckpt
    a = _answers(path, x)
    a.fill()
    tensors, meta = _file(a.path)
    tensors["labels/0"], tensors["confidence/0"] = tensors["labels/"].clone(), tensors["confidence/"].clone()  # plausible
    save_file(tensors, str(a.path), metadata=meta)  # the old HMAC, copied
    b = _answers(path, x)
    assert b.rejected == 1 and b.done == 0 and "tampered" in b.note
    assert not torch.equal(b.get((0,))[0], tensors["labels/0"])  # recomputed, not the forgery
    b.fill()
    assert _answers(path, x).rejected == 0  # the next write replaced it
    save_file(tensors, str(a.path))  # no signature at all
    c = _answers(path, x)
    assert c.rejected == 1 and "unsigned" in c.note and c.done == 0


@pytest.mark.slow
@pytest.mark.parametrize("damage, why", [
    (lambda t: t["labels/1"].fill_(99), "out of 0..3"),
    (lambda t: t["labels/1"].fill_(-1), "out of 0..3"),
    (lambda t: t["confidence/1"].__setitem__(0, float("nan")), "non-finite"),
    (lambda t: t["confidence/1"].__setitem__(0, -0.5), "outside [1/4, 1]"),
    (lambda t: t["confidence/1"].fill_(0.1), "outside [1/4, 1]"),  # below 1/k: no softmax's top class
    (lambda t: t["confidence/1"].mul_(2).clamp_(min=1.5), "outside [1/4, 1]"),
    (lambda t: t.pop("confidence/1"), "missing"),
    (lambda t: t.__setitem__("confidence/1", t["confidence/1"][:, None].repeat(1, 4)), "shape"),
    (lambda t: t.__setitem__("labels/1", t["labels/1"][:5].clone()), "shape"),
])
def test_a_signed_file_with_invalid_answers_is_ignored(ckpt, damage, why):
    """A correctly signed file is still validated entry by entry (a label of 99 crashed the page, -1 wrapped)."""
    path, x = ckpt
    a = _answers(path, x)
    a.fill()
    tensors = a._tensors()
    damage(tensors)
    a._write(tensors)  # signed with the right key: only the content check can refuse it
    b = _answers(path, x)
    assert b.rejected == 1 and b.done == 0 and why in b.note and "invalid content" in b.note
    labels, conf = b.get((1,))
    assert labels.max() < 4 and labels.min() >= 0 and torch.isfinite(conf).all()


def test_racing_processes_agree_on_one_private_key(tmp_path, monkeypatch):
    where = tmp_path / "config" / "wfexplain" / "cache.key"
    barrier, keys = threading.Barrier(8), []

    def make():
        barrier.wait()
        keys.append(create_key(where))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32
    assert where.read_bytes() == keys[0] and stat.S_IMODE(where.stat().st_mode) == 0o600
    assert [p.name for p in where.parent.iterdir()] == ["cache.key"]  # no temporaries left
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert install_key() == (keys[0], "")


@pytest.mark.slow
def test_an_untrusted_key_file_falls_back_to_a_key_of_this_process(ckpt, tmp_path, monkeypatch):
    path, x = ckpt
    shared = tmp_path / "shared.key"
    shared.write_bytes(os.urandom(32))
    shared.chmod(0o644)  # readable by others: anyone could sign a forgery with it
    monkeypatch.setenv(KEY_ENV, str(shared))
    a = _answers(path, x)
    assert "no usable key file" in a.note and "readable or writable by others" in a.note
    a.fill()
    again = _answers(path, x)  # the same process reads its own files back
    assert again.done == 11 and again.rejected == 0
    monkeypatch.setitem(integrity._KEYS, str(shared), (os.urandom(32), "another process's key"))
    other = _answers(path, x)  # another process: another key
    assert other.done == 0 and other.rejected == 1 and "signed with another key" in other.note


def test_a_full_disk_keeps_the_answers_in_memory_and_a_dead_writers_temporary_is_removed(ckpt, monkeypatch):
    path, x = ckpt
    a = _answers(path, x)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = a.path.with_name(f".{a.path.name}.wfx-{dead.pid}-abcd")  # left by a writer killed mid-write
    live = a.path.with_name(f".{a.path.name}.wfx-{os.getppid()}-abcd")  # another writer, still at work
    a.path.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")

    def full(*args, **kw):
        Path(args[1]).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(answers_module, "save_file", full)
    result = a.fill()
    assert result["computed"] == 11 and not result["cancelled"] and a.done == 11 and a.has((1, 2))
    assert "memory only" in a.note and "no space left" in a.note
    assert not a.path.exists() and not stale.exists() and live.exists()
    assert [p.name for p in a.path.parent.iterdir() if ".wfx-" in p.name] == [live.name]  # ours removed
    monkeypatch.undo()
    monkeypatch.delenv(CACHE_ENV, raising=False)
    a._write()  # space again: written, and the note goes
    assert a.path.is_file() and a.note == ""


def test_the_background_run_records_any_failure_instead_of_dying(ckpt, monkeypatch):
    path, x = ckpt
    a = _answers(path, x)
    real, calls = a.predictor.logits, []

    def flaky(*args, **kw):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("CUDA error: out of memory")
        return real(*args, **kw)

    monkeypatch.setattr(a.predictor, "logits", flaky)
    assert a.background() is None  # never raises
    assert a.done == 2 and "out of memory" in a.error and "stopped after 2 of 11" in a.note
    assert a.background()["computed"] == 9 and a.error == "" and a.note == ""  # a later run finishes


def test_an_estimate_takes_the_share_that_fits_its_time(ckpt):
    """The estimate aims at ESTIMATE_S seconds at the last set's pace: a slower model gets a smaller share."""
    from wfexplain.answers import ESTIMATE_S, ESTIMATE_SHARE

    path, _ = ckpt
    x = torch.randn(200, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    a, targets = _answers(path, x), torch.arange(200) % 4
    assert len(a.estimate((0, 1), targets)[0]) == round(ESTIMATE_SHARE * 200)  # no pace yet: the largest share
    a.seconds_per_set = 2 * ESTIMATE_S / ESTIMATE_SHARE  # twice too slow for the largest share
    assert len(a.estimate((0, 1), targets)[0]) == round(ESTIMATE_SHARE / 2 * 200)
    a.seconds_per_set = 1e6  # far too slow: still one image a class
    assert sorted(targets[a.estimate((0, 1), targets)[0]].tolist()) == [0, 1, 2, 3]
