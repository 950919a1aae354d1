"""The Compare page through AppTest: a temporary copy of the small shipped ``mnist-cnn`` checkpoint (opened with
``?ckpt=<dir>``) with a hand-made ``benchmark.json`` (``make_bench``, tests/conftest.py); ``run_benchmark`` is
replaced by a fake. The tables and figures it shows: tests/wfexplain/benchmark/test_comparison.py."""

import base64
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

import wfexplain
import wfexplain.benchmark.runner
from tests import ROOT
from wfexplain.benchmark import comparison, layout
from wfexplain.benchmark.catalogue import METRICS
from wfexplain.data import subset_tensors
from wfexplain.splits import checkpoint_split
from wfexplain_dashboard.settings import EVAL_LIMIT

pytestmark = pytest.mark.slow  # AppTest runs of the whole app

SOURCE = ROOT / "checkpoints" / "mnist-cnn"


needs_checkpoint = pytest.mark.skipif(not (SOURCE / "manifest.json").is_file(), reason="checkpoints/mnist-cnn is missing")


@pytest.fixture
def checkpoint(tmp_path, monkeypatch) -> Path:
    target = tmp_path / "mnist-copy"
    shutil.copytree(SOURCE, target)
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(target))  # a root that is itself a checkpoint
    return target


def public_id(ckpt: Path) -> str:
    return f"{ckpt.parent.name}/{ckpt.name}"


@pytest.fixture
def open_compare(open_app, assert_clean):
    """``open_compare(ckpt, **query)``: the Compare page of the checkpoint ``ckpt`` (a catalogue root)."""

    def run(ckpt: Path, **query) -> AppTest:
        at = open_app("views/compare.py", ckpt=public_id(ckpt), **query)
        assert_clean(at)
        assert [t.value for t in at.title] == ["Compare"]
        return at

    return run


def family_tables(at: AppTest) -> list[pd.DataFrame]:
    """The methods x metrics tables, one per family (the gap tables have no reference rows, the cost table one
    column, headed by the time)."""
    return [d.value for d in at.dataframe
            if "Retrain (oracle)" in d.value.index and not str(d.value.columns[0]).startswith("time to forget")]


def methods_table(at: AppTest) -> pd.DataFrame:
    """The family tables side by side: the whole methods x metrics table."""
    return pd.concat(family_tables(at), axis=1)


@needs_checkpoint
def test_page_shows_the_benchmark(checkpoint, make_bench, open_compare):
    (checkpoint / "benchmark.json").write_text(json.dumps(make_bench()))
    at = open_compare(checkpoint, forget="5")
    assert at.session_state["_view"].path == str(checkpoint.resolve())
    (pick,) = [s for s in at.selectbox if s.label == "Forget class"]
    assert pick.value == 5  # the sidebar's forget class, benchmarked
    table = methods_table(at)
    assert list(table.index) == [comparison.method_label(m) for m in make_bench()["methods"]]
    header = comparison.column_header("forget_accuracy_test")
    assert table.loc["WF (weight filtering)", header].endswith("★")  # 1.5% beats the other unlearning methods
    assert table.loc["SSD", comparison.column_header("seconds")].endswith("★")
    assert table.drop(columns=comparison.column_header("zrf")).apply(lambda col: col.str.endswith("★").sum()).eq(1).all()
    assert any(m.label.startswith("WF, all 10 classes") and m.value == "20.0 s" for m in at.metric)
    assert any(m.value == "0.20×" for m in at.metric)
    glossary = next(e for e in at.expander if e.label.startswith("Glossary"))
    text = " ".join(m.value for m in glossary.markdown)
    for metric in METRICS.values():
        assert metric.label in text and metric.formula in text
    assert len(at.get("plotly_chart")) == 3  # trade-off, A/B bars, predictions
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert source.value == layout.BENCHMARK  # the sidebar's set is the benchmarked class shown

    pick.select("mean").run()  # "all classes (mean)"
    assert not at.exception, [e.value for e in at.exception]
    assert list(methods_table(at).index) == [comparison.method_label(m) for m in make_bench()["methods"]]
    assert any("Pick a single forget class" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 2  # trade-off and the A/B bars, live: no benchmark class to show
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert len(source.options) == 1 and source.value == layout.LIVE


@needs_checkpoint
def test_page_without_benchmark_then_run_one(checkpoint, monkeypatch, make_bench, open_compare):
    at = open_compare(checkpoint, forget="2")
    assert any(f"wfexplain benchmark --checkpoint {public_id(checkpoint)}" in i.value for i in at.info)
    assert not any(str(checkpoint.parent) in m.value for m in (*at.info, *at.markdown, *at.caption))  # no server path
    assert not [d for d in at.dataframe]

    calls = []

    def fake_run_benchmark(path, config, progress, should_stop):
        calls.append({"path": path, "forget_classes": list(config.forget_classes), "seeds": config.seeds,
                      "out": config.out})
        progress(1, 2, {"method": "retrain", "forget_class": 2, "seed": 0})
        assert not should_stop()
        progress(2, 2, {"method": "wf", "forget_class": 2, "seed": 0})
        return make_bench(classes=(2,), methods=("original", "retrain", "wf"))

    monkeypatch.setattr(wfexplain.benchmark.runner, "run_benchmark", fake_run_benchmark, raising=False)
    at.button(key="compare_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.session_state["compare_job"].join(30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert calls == [{"path": str(checkpoint.resolve()), "forget_classes": [2], "seeds": 1, "out": None}]
    assert not (checkpoint / "benchmark.json").exists()
    assert any("this session" in s.value for s in at.success)
    assert list(methods_table(at).index) == [comparison.method_label(m) for m in ("original", "retrain", "wf")]
    assert not any("wfexplain benchmark --checkpoint" in i.value for i in at.info)

    at.button(key="compare_drop_result").click().run()  # back to the (missing) file
    assert any(f"wfexplain benchmark --checkpoint {public_id(checkpoint)}" in i.value for i in at.info)


def chart_spec(at: AppTest, title: str) -> dict:
    (spec,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if title in c.proto.spec]
    return spec


def bar_values(trace: dict) -> list[float]:
    y = trace["y"]
    if isinstance(y, dict):  # plotly's typed array
        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"])).astype(float).tolist()
    return [math.nan if v is None else float(v) for v in y]


@needs_checkpoint
def test_page_tables_fit_the_page(checkpoint, make_bench, open_compare):
    (checkpoint / "benchmark.json").write_text(json.dumps(make_bench()))
    at = open_compare(checkpoint, forget="3")
    tables = family_tables(at)
    assert [len(t.columns) for t in tables] == [3, 3, 3]  # three narrow tables, not one of nine columns
    assert sorted(c for t in tables for c in t.columns) == sorted(comparison.column_header(m) for m in METRICS)
    assert all(layout.text_width(t) <= layout.MAX_TABLE_CHARS for t in tables)
    titles = [m.value for m in at.markdown if m.value.startswith("**")]
    assert titles[:3] == ["**Forgetting**", "**Utility and cost**", "**Privacy and residual knowledge**"]


@needs_checkpoint
def test_ab_view_of_a_two_class_live_forget_set(checkpoint, make_bench, open_compare):
    """A sidebar set of two classes: WF live vs Original on the evaluation subset, matching the model's own
    per-class accuracies; the benchmark's class stays available on its own images, never mixed."""
    bench = make_bench()
    (checkpoint / "benchmark.json").write_text(json.dumps(bench))
    at = open_compare(checkpoint, forget="3,5")
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert source.value == layout.LIVE
    assert any("(3: 3, 5: 5) has 2 classes" in c.value for c in at.caption)
    spec = chart_spec(at, "Per-class test accuracy")
    a, b = spec["data"]
    assert a["name"] == "A: WF, live (the sidebar's forget set)" and b["name"] == "B: Original (no unlearning), live"
    assert f"the dashboard's {EVAL_LIMIT:,} evaluation images" in spec["layout"]["title"]["text"].replace("<br>", " ")
    assert a["x"][3] == "3 (forgotten)" and a["x"][5] == "5 (forgotten)"

    model = wfexplain.load(checkpoint)
    x, y, _ = subset_tensors(checkpoint_split(model.manifest, "test", None), EVAL_LIMIT)
    with torch.inference_mode():
        after, before = model(x, forget=[3, 5]).argmax(1), model(x).argmax(1)
    for bar, pred in ((a, after), (b, before)):
        assert bar_values(bar) == pytest.approx([(pred[y == k] == k).float().mean().item() for k in range(10)])
    assert max(bar_values(a)[3], bar_values(a)[5]) < 0.5 < min(bar_values(b)[3], bar_values(b)[5])

    source.set_value(layout.BENCHMARK).run()  # the page's benchmarked class 3 (the set's first), like with like
    assert not at.exception, [e.value for e in at.exception]
    spec = chart_spec(at, "Per-class test accuracy")
    a, b = spec["data"]
    assert (a["name"], b["name"]) == ("A: WF (weight filtering)", "B: Retrain (oracle)")
    assert bar_values(a) == pytest.approx(bench["per_class"]["3"]["wf"]["per_class_accuracy"])
    assert bar_values(b) == pytest.approx(bench["per_class"]["3"]["retrain"]["per_class_accuracy"])
    assert "the benchmark's 1,000 test images" in spec["layout"]["title"]["text"].replace("<br>", " ")
    (pick,) = [s for s in at.selectbox if s.label == "Method B"]
    assert "WF, live (the sidebar's forget set)" not in pick.options  # no live bar beside benchmark bars


def test_a_benchmark_of_other_weights_is_flagged(checkpoint, make_bench, open_compare):
    """A benchmark.json records the SHA-256 of the weights it scored; the page warns when the checkpoint's differ."""
    files = wfexplain.load(checkpoint).manifest.files
    assert comparison.weights_mismatch({"weights": dict(files)}, files) == []
    assert comparison.weights_mismatch({}, files) == []  # older benchmarks: nothing to compare
    other = {**files, "model.safetensors": "0" * 64}
    assert comparison.weights_mismatch({"weights": other}, files) == ["model.safetensors"]
    (checkpoint / "benchmark.json").write_text(json.dumps({**make_bench(), "weights": other}))
    at = open_compare(checkpoint, forget="5")
    assert not at.exception
    assert any("made for other weights (model.safetensors differ" in w.value for w in at.warning)
    (checkpoint / "benchmark.json").write_text(json.dumps({**make_bench(), "weights": dict(files)}))
    assert not [w for w in open_compare(checkpoint, forget="5").warning if "other weights" in w.value]


