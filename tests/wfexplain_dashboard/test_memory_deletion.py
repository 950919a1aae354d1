"""The Memory page's deletion curves ("Do these memories explain?"): measured on demand for the sidebar's forget set,
with a progress bar, then kept (a rerun or coming back does not measure again); the summary `wfexplain explanations
--record` stored is shown without pressing; a checkpoint whose training images cannot be read says so."""

import shutil

import pytest

from wfexplain import splits
from wfexplain.cli import main
from wfexplain.data.base import DatasetError
from wfexplain.explain import deletion

pytestmark = pytest.mark.slow  # AppTest runs of the whole app on a tiny trained checkpoint


@pytest.fixture
def tiny(trained_bars, tmp_path, monkeypatch):
    """The session's tiny CNN (3 bar classes, 24 test images), served as ``user/bars``."""
    dest = shutil.copytree(trained_bars, tmp_path / "user" / "bars")
    monkeypatch.setenv("WFEXPLAIN_USER_CHECKPOINTS", str(tmp_path / "user"))
    return dest


@pytest.fixture
def measured(monkeypatch) -> list[dict]:
    """Each call of the library's measure (its classes, sets and how often it reported progress), passed through."""
    calls: list[dict] = []
    real = deletion.measure

    def counting(*args, progress=None, **kw):
        call = {"classes": kw.get("classes"), "sets": kw.get("sets"), "progress": 0}
        calls.append(call)

        def seen(*a):
            call["progress"] += 1
            progress(*a)

        return real(*args, progress=seen, **kw)

    monkeypatch.setattr(deletion, "measure", counting)
    return calls


def section_text(at) -> list[str]:
    return [e.value for kind in ("markdown", "caption", "info", "warning", "error") for e in getattr(at, kind)]


def verdicts(at) -> list[str]:
    return [m.value for m in at.markdown if "The memory's ranking is" in m.value]


def test_measure_draws_the_sets_curves_once_and_keeps_them(tiny, measured, open_app, assert_clean):
    at = open_app("views/memory.py", ckpt="user/bars", forget="0,2")
    assert_clean(at)
    assert "Do these memories explain? (deletion curves)" in [s.value for s in at.subheader]
    assert not verdicts(at) and not measured  # nothing is measured before the button
    assert "Test images (accuracies): all 24" in section_text(at)
    images = len(at.image)  # the component inspector's
    next(b for b in at.button if b.label == "Measure").click().run()
    assert_clean(at)
    assert len(measured) == 1 and measured[0]["classes"] == [] and measured[0]["sets"] == [[0, 2]]
    assert measured[0]["progress"] > 10  # the bar was fed: one call per deletion
    (sentence,) = verdicts(at)
    assert sentence.startswith("**bottom + top**: The memory's ranking is ")
    assert "than the best baseline" in sentence or "as the best baseline" in sentence
    assert "random" in sentence and "over 5 draws" in sentence
    table = at.dataframe[-1].value
    assert list(table["ranking"]) == ["memory (the filter's ranking)", "activation selectivity",
                                      "gradient × activation", "random"]
    assert table["selectivity"].notna().all() and table["selectivity std"].notna().tolist() == [False] * 3 + [True]
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Curves .png", "Curves .svg", "Curves .pdf", "Table .csv"} <= set(labels)
    assert len(at.image) == images + 1  # the figure

    at.run()  # a rerun: shown again from the cache
    assert_clean(at)
    assert verdicts(at) == [sentence] and len(measured) == 1
    at.switch_page("views/forget.py").run()
    at.switch_page("views/memory.py").run()  # coming back
    assert_clean(at)
    assert verdicts(at) == [sentence] and len(measured) == 1


def test_a_recorded_summary_is_shown_without_pressing(tiny, measured, open_app, assert_clean):
    argv = ["explanations", "--checkpoint", str(tiny), "--fractions", "0.1", "0.3", "--draws", "2", "--train-limit",
            "30", "--forget-set", "0", "2", "--record", "-q"]
    assert main(argv) == 0
    calls = len(measured)  # the command's own measure
    at = open_app("views/memory.py", ckpt="user/bars", forget="0,2")
    assert_clean(at)
    shown = section_text(at)
    (recorded,) = [t for t in shown if t.startswith("**Recorded** by `wfexplain explanations --record`")]
    assert "24 test images" in recorded and "30 training images" in recorded and "of 3 classes" in recorded
    assert [t for t in shown if t.startswith("Over the recorded classes: The memory's ranking is ")]
    assert [t for t in shown if t.startswith("Recorded for this set: The memory's ranking is ")]
    assert len(measured) == calls  # nothing measured by the page


def test_unreadable_training_images_are_said_plainly(tiny, monkeypatch, measured, open_app, assert_clean):
    def missing(manifest, data_dir=None):  # an imported model whose training data is not on this server
        raise DatasetError(f"no training images under {tiny.parent.parent}/train")

    monkeypatch.setattr(splits, "checkpoint_train_split", missing)
    at = open_app("views/memory.py", ckpt="user/bars")
    assert_clean(at)
    (warning,) = [w.value for w in at.warning if "training images" in w.value]
    assert "cannot be read (no training images under" in warning and str(tiny.parent.parent) not in warning
    assert not [b for b in at.button if b.label == "Measure"] and not measured
