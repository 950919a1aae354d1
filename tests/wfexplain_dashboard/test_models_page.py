"""The Models page: a checkpoint's training history (curves and a download) and its gate coverage."""

import shutil

import pytest

from tests import ROOT
from wfexplain.history import HISTORY_FILE, history_csv

pytestmark = pytest.mark.slow  # AppTest runs of the whole app


def test_the_models_page_draws_the_history(tmp_path, monkeypatch, open_app, assert_clean):
    mine = tmp_path / "mine"
    shutil.copytree(ROOT / "checkpoints" / "mnist-cnn", mine / "mnist", ignore=shutil.ignore_patterns("retrain", "cache"))
    rows = [{"stage": "train", "step": s, "total": 3, "loss": 1.0 / s} for s in (1, 2, 3)]
    (mine / "mnist" / HISTORY_FILE).write_bytes(history_csv(rows))
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(mine))
    at = open_app("views/models.py", ckpt="mine/mnist")
    assert_clean(at)
    charts = [c for c in at.get("plotly_chart") if "train: 3 reports over 3 steps" in c.proto.spec]
    assert charts and any(b.label == "History (.csv)" for b in at.get("download_button"))


def test_the_models_page_shows_the_coverage_under_the_model_card(open_app, assert_clean):
    at = open_app("views/models.py")
    assert_clean(at)
    assert "Gate coverage" in [h.value for h in at.subheader]
    table = next(d.value for d in at.dataframe if "stage" in d.value.columns)
    assert list(table["stage"]) == ["features", "fc"] and list(table.columns) == ["stage", "channels", "features"]
