"""Runs keep every step they report: history.csv beside the manifest, TensorBoard on request, curves on Models."""
import io

import pandas as pd
from safetensors import safe_open

from wfexplain import pipeline
from wfexplain.engine import TrainConfig, UnlearnConfig
from wfexplain.history import HISTORY_FILE, Recorder, history_csv, merge, read_history


def test_recorder_rows_csv_and_merge():
    seen = []
    rec = Recorder("unlearn")
    report = rec.wrap(lambda s, t, m: seen.append(s))
    report(1, 4, {"loss": 0.5, "note": "text", "flag": True})
    report(4, 4, {"loss": 0.25, "val_forget": float("nan")})
    assert seen == [1, 4] and rec.rows[0] == {"stage": "unlearn", "step": 1, "total": 4, "loss": 0.5}
    text = history_csv(rec.rows).decode()
    assert text.splitlines()[0] == "stage,step,total,loss,val_forget" and text.splitlines()[2].endswith(",0.25,")
    old = [{"stage": "train", "step": 1, "total": 1, "loss": 2.0}, {"stage": "unlearn", "step": 9, "total": 9}]
    assert [r["stage"] for r in merge(old, rec.rows)] == ["train", "unlearn", "unlearn"]


def test_a_damaged_history_reads_as_none(tmp_path):
    (tmp_path / HISTORY_FILE).write_text("stage,step,total\ntrain,not-a-number,3\n")
    assert read_history(tmp_path) == [] and read_history(tmp_path / "missing") == []


def test_train_then_unlearn_keep_both_stages_and_tensorboard_gets_them(tmp_path, bar_data):
    """Trains its own model: the shared one (trained_bars) was trained without --tensorboard."""
    ck = tmp_path / "ck"
    pipeline.train_checkpoint("imagefolder", "cnn", ck, TrainConfig(epochs=2, batch_size=16, shift=0.0),
                              data_dir=str(bar_data), img_size=16, tensorboard=tmp_path / "tb")
    train_rows = read_history(ck)
    assert train_rows and {r["stage"] for r in train_rows} == {"train"} and "loss" in train_rows[-1]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))  # sent to TensorBoard as asked
    reports = []
    result = pipeline.unlearn_checkpoint(ck, UnlearnConfig(steps=8, batch_size=16),
                                         progress=lambda step, total, m: reports.append((step, m.get("phase"))))
    rows = read_history(ck)
    assert rows[: len(train_rows)] == train_rows and rows[len(train_rows):] == result["history"]
    assert {"val_forget", "val_retain"} <= set(rows[-1]) and rows[-1]["step"] == 8
    # pauses are announced to the caller (a progress bar says so) and never recorded as steps
    assert (1, "validation") in reports and reports[-1] == (8, "final evaluation")
    assert len(reports) == len(result["history"]) + sum(p is not None for _, p in reports)
    assert not any("phase" in r for r in rows)
    again = pipeline.unlearn_checkpoint(ck, UnlearnConfig(steps=4, batch_size=16), force=True)
    rows = read_history(ck)  # the new round replaces the old one's rows
    assert [r for r in rows if r["stage"] == "unlearn"] == again["history"] and rows[-1]["total"] == 4


def test_a_removal_carries_its_repair_history(trained_checkpoint, tmp_path):
    import wfexplain
    from wfexplain.cli import main
    from wfexplain.configs import RemovalConfig
    from wfexplain.removal import remove

    model = wfexplain.load(trained_checkpoint)
    result = remove(model, [0], None, RemovalConfig(steps=3, batch_size=8))
    assert [r["step"] for r in result["history"]] == [1, 2, 3] and all(r["stage"] == "removal" for r in result["history"])
    out = tmp_path / "removed.safetensors"
    assert main(["remove", "--checkpoint", str(trained_checkpoint), "--forget", "0", "--out", str(out), "--steps", "3",
                 "--batch-size", "8", "--limit", "12"]) == 0
    with safe_open(str(out), "pt") as f:
        table = pd.read_csv(io.StringIO(f.metadata()["history"]))
    assert list(table.step) == [1, 2, 3] and set(table.stage) == {"removal"}
