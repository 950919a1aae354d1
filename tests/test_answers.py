"""Precomputed answers (issue 16): singles and pairs once per checkpoint and inputs, on disk, keyed by digests."""

import pytest
import torch

import wfexplain
from wfexplain.answers import CACHE_ENV, Answers, set_key, singles_and_pairs
from wfexplain.checkpoint import save_checkpoint
from wfexplain.inference import Predictor

from .conftest import randomized


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    model = randomized("cnn", num_classes=4)
    save_checkpoint(model, tmp_path / "ck", {"seed": 0})
    return tmp_path / "ck", torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def _answers(path, x):
    return Answers(Predictor(wfexplain.load(path), x), path)


def test_fill_computes_every_single_and_pair_once_and_a_restart_reads_them(ckpt):
    path, x = ckpt
    a = _answers(path, x)
    assert a.total == 1 + 4 + 6 and a.done == 0 and a.path.parent == path / "cache"
    seen = []
    result = a.fill(progress=lambda i, n, m: seen.append(i))
    assert result == {"computed": 11, "total": 11, "cancelled": False, "path": a.path} and seen[-1] == 11
    model = wfexplain.load(path)
    labels, probs = a.get((1, 3))
    with torch.no_grad():
        reference = model(x, forget=[1, 3]).softmax(1)
    assert torch.equal(labels, reference.argmax(1)) and torch.allclose(probs, reference, atol=1e-3)
    again = _answers(path, x)  # a new session, or a restart
    assert again.done == 11 and again.has((3, 1)) and again.fill()["computed"] == 0
    assert torch.equal(again.get((1, 3))[0], labels) and torch.equal(again.get((1, 3))[1], probs)


def test_answers_are_keyed_by_the_weights_and_the_inputs(ckpt, tmp_path):
    path, x = ckpt
    a = _answers(path, x)
    a.fill()
    assert _answers(path, x + 1).done == 0  # other images
    other = randomized("cnn", seed=5, num_classes=4)
    save_checkpoint(other, path, {"seed": 0}, overwrite=True)  # other weights in the same directory
    assert _answers(path, x).done == 0


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
    rows, labels, probs = a.estimate((0, 1, 2), targets, share=0.34)
    assert torch.allclose(probs.sum(1), torch.ones(4))
    assert len(rows) == 4 and sorted(targets[rows].tolist()) == [0, 1, 2, 3]
    assert torch.equal(labels, a.get((0, 1, 2))[0][rows])
    assert set_key((3, 1, 1)) == "1-3" and set_key(()) == "" and len(singles_and_pairs(30)) == 31  # no pairs past 20
