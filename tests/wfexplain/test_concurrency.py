"""Two writers at once: serialised by the directory's lock, or refused; never silently lost.

Each race is forced, not hoped for: the first writer holds its lock until the second one has
reached the lock (its own checks done), then finishes; the second must see the first's result.
"""
import threading

import pytest

from wfexplain import atomic, checkpoint, pipeline
from wfexplain.atomic import replace_dir
from wfexplain.checkpoint import CheckpointError, read_manifest, save_checkpoint, update_manifest
from wfexplain.engine import UnlearnConfig


@pytest.fixture
def arrivals(monkeypatch):
    """An event set whenever a thread other than the first reaches a directory's lock."""
    arrived = threading.Event()
    first = threading.get_ident()
    real = atomic.dir_lock

    def spying(target):
        if threading.get_ident() != first:
            arrived.set()
        return real(target)

    monkeypatch.setattr(atomic, "dir_lock", spying)
    monkeypatch.setattr(checkpoint, "dir_lock", spying)
    return arrived


def _second(fn) -> dict:
    """Run ``fn`` in a thread; returns a dict that will hold its result or exception."""
    out: dict = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:
            out["error"] = e

    out["thread"] = threading.Thread(target=run)
    out["thread"].start()
    return out


def test_two_new_writers_of_one_directory_the_second_is_refused(tmp_path, arrivals):
    target = tmp_path / "d"

    def write(text: str) -> None:
        with replace_dir(target) as tmp:
            (tmp / "who").write_text(text)

    with replace_dir(target) as tmp:
        (tmp / "who").write_text("first")
        second = _second(lambda: write("second"))
        assert arrivals.wait(10)
    second["thread"].join(10)
    assert isinstance(second.get("error"), FileExistsError)
    assert (target / "who").read_text() == "first"


def test_two_new_checkpoints_of_one_name_the_second_is_refused(tmp_path, make_model, arrivals, monkeypatch):
    """Two ``train --out X`` (or dashboard jobs of one name) without --force: one checkpoint, one refusal."""
    target = tmp_path / "ck"
    real = checkpoint.write_json
    started = {}

    def slow_manifest(path, obj):  # the first writer, between its checks and its swap, lets the second one start
        if not started:
            started["second"] = _second(lambda: save_checkpoint(make_model("cnn", seed=2), target, {"seed": 2}))
            assert arrivals.wait(10)
        real(path, obj)

    monkeypatch.setattr(checkpoint, "write_json", slow_manifest)
    save_checkpoint(make_model("cnn", seed=1), target, {"seed": 1})
    second = started["second"]
    second["thread"].join(30)
    assert isinstance(second.get("error"), FileExistsError)
    assert read_manifest(target).seed == 1


def test_concurrent_manifest_updates_both_land(tmp_path, make_model, arrivals):
    """Two ``evaluate --record`` at once: each block is merged into the manifest as it is then; none is dropped."""
    save_checkpoint(make_model("cnn"), tmp_path / "ck", {"seed": 0})
    started = {}

    def first(m):
        started["second"] = _second(lambda: update_manifest(tmp_path / "ck", lambda m: m.replace(
            metrics={**m.metrics, "validation_evaluation": {"limit": 2}})))
        assert arrivals.wait(10)
        return m.replace(metrics={**m.metrics, "evaluation": {"limit": 1}})

    update_manifest(tmp_path / "ck", first)
    started["second"]["thread"].join(30)
    assert "error" not in started["second"]
    assert set(read_manifest(tmp_path / "ck").metrics) >= {"evaluation", "validation_evaluation"}


def test_a_writer_whose_checkpoint_changed_since_it_loaded_it_refuses(tmp_path, make_model):
    path = tmp_path / "ck"
    save_checkpoint(make_model("cnn", seed=0), path, {"seed": 0})
    loaded = read_manifest(path).files
    save_checkpoint(make_model("cnn", seed=1), path, {"seed": 1}, overwrite=True, expect=loaded)  # nothing changed
    with pytest.raises(CheckpointError, match="changed since it was loaded"):
        save_checkpoint(make_model("cnn", seed=2), path, {"seed": 2}, overwrite=True, expect=loaded)
    with pytest.raises(CheckpointError, match="changed since it was loaded"):
        update_manifest(path, lambda m: m.replace(metrics={"evaluation": {}}), expect=loaded)
    assert read_manifest(path).seed == 1


def test_two_in_place_unlearn_rounds_the_one_that_finishes_second_refuses(trained_checkpoint):
    """Two ``unlearn --force`` on one checkpoint: the second to finish finds new memory under it and writes nothing."""
    ck = trained_checkpoint
    cfg = UnlearnConfig(steps=4, batch_size=16)
    raced = []

    def progress(step, steps, metrics):  # while the first round trains, another one runs to the end
        if not raced:
            raced.append(pipeline.unlearn_checkpoint(ck, cfg, force=True))

    with pytest.raises(CheckpointError, match="changed since it was loaded"):
        pipeline.unlearn_checkpoint(ck, cfg, force=True, progress=progress)
    assert raced and read_manifest(ck).unlearned
