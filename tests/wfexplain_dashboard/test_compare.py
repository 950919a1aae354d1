"""The Compare page through AppTest: a temporary copy of the small shipped ``mnist-cnn`` checkpoint (opened with
``?ckpt=<dir>``) with a hand-made ``benchmark.json`` (``make_bench``, or ``make_old_bench`` for the schema before the
fair-tuning protocol; tests/conftest.py); ``run_benchmark`` is replaced by a fake. The tables and figures it shows:
tests/wfexplain/benchmark/test_comparison.py."""

import base64
import json
import math
import shlex
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
    target = tmp_path / "mnist copy"  # a space: the suggested command must quote the directory
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
        assert not at.error, [e.value for e in at.error]  # e.g. a schema mismatch is shown, not raised
        assert [t.value for t in at.title] == ["Compare"]
        return at

    return run


HEADERS = {comparison.column_header(m) for m in [*METRICS, "mia_efficacy", "zrf", "relearn_steps"]}


def family_tables(at: AppTest) -> list[pd.DataFrame]:
    """The methods x metrics tables, one per family (the gap tables have no reference rows; the cost and tuning
    tables other columns)."""
    return [d.value for d in at.dataframe
            if "Retrain (oracle)" in d.value.index and set(map(str, d.value.columns)) <= HEADERS]


def forget_set_pick(at: AppTest):
    (pick,) = [s for s in at.selectbox if s.label == "Forget set"]
    return pick


def command(ckpt: Path) -> str:
    """The command the page suggests for the test checkpoint (no validation split: untuned). It lies outside the
    server's working directory, so the page names it without revealing where the server keeps it."""
    return f"wfexplain benchmark --checkpoint {shlex.quote(ckpt.name)} --pairs 5 --triples 5 --no-tune"


def methods_table(at: AppTest) -> pd.DataFrame:
    """The family tables side by side: the whole methods x metrics table."""
    return pd.concat(family_tables(at), axis=1)


@needs_checkpoint
def test_page_shows_the_benchmark(checkpoint, make_bench, open_compare):
    (checkpoint / "benchmark.json").write_text(json.dumps(make_bench()))
    at = open_compare(checkpoint, forget="5")
    assert at.session_state["_view"].path == str(checkpoint.resolve())
    pick = forget_set_pick(at)
    assert pick.value == "5"  # the sidebar's forget class, benchmarked
    assert pick.options == ["single classes (mean of 2)", "pairs (mean of 2)", "3: 3", "5: 5", "3: 3 + 5: 5",
                            "1: 1 + 4: 4"]
    table = methods_table(at)
    assert list(table.index) == [comparison.method_label(m) for m in make_bench()["methods"]]
    header = comparison.column_header("forget_accuracy_test")
    assert table.loc["WF (weight filtering)", header] == "1.5 ± 1.0 [+1.0] ★"  # 1.5% beats the others; Retrain 0.5%
    assert table.loc["SSD", comparison.column_header("seconds")].endswith("★")
    assert table.loc["Random labels", comparison.column_header("attack_tpr_at_1fpr")].endswith("★")
    stars = table.apply(lambda col: col.str.contains("★").sum())
    assert stars.drop(comparison.column_header("zrf_paper")).eq(1).all() and stars[comparison.column_header("zrf_paper")] == 5
    assert not [w for w in at.warning if "Protocol" in w.value or "Untuned" in w.value]  # a tuned, current benchmark
    glossary = next(e for e in at.expander if e.label.startswith("Glossary"))
    text = " ".join(m.value for m in glossary.markdown)
    for metric in METRICS.values():
        assert metric.label in text and metric.formula in text
    assert len(at.get("plotly_chart")) == 3  # trade-off, A/B bars, predictions
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert source.value == layout.BENCHMARK  # the sidebar's set is the benchmarked class shown

    pick.set_value("all-1").run()  # the mean over the single classes
    assert not at.exception, [e.value for e in at.exception]
    assert list(methods_table(at).index) == [comparison.method_label(m) for m in make_bench()["methods"]]
    assert methods_table(at).loc["WF (weight filtering)", header] == "1.0 ± 1.0 [+1.0] ★"
    assert any("Pick one forget set" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 2  # trade-off and the A/B bars, live: no benchmark set to show
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert len(source.options) == 1 and source.value == layout.LIVE

    forget_set_pick(at).set_value("all-2").run()  # the mean over the pairs: by_size["2"]
    assert not at.exception, [e.value for e in at.exception]
    assert methods_table(at).loc["WF (weight filtering)", header] == "3.0 ± 1.0 [+1.0] ★"

    forget_set_pick(at).set_value("3-5").run()  # one pair: its own results, and where its first class goes
    assert not at.exception, [e.value for e in at.exception]
    assert methods_table(at).loc["WF (weight filtering)", header] == "1.8 ± 1.0 [+1.0] ★"
    assert any(h.value.startswith(r"Where class 3\: 3's predictions go (the first class of 3\: 3 + 5\: 5)")
               for h in at.subheader)  # as markdown source: names are escaped (":" too)
    spec = chart_spec(at, "Per-class test accuracy")  # live (the sidebar's class 5 is not this pair): forgotten 5
    assert spec["data"][0]["x"][5] == "5 (forgotten)"


@needs_checkpoint
def test_cost_at_parity_tuning_and_the_command(checkpoint, make_bench, open_compare):
    (checkpoint / "benchmark.json").write_text(json.dumps(make_bench()))
    at = open_compare(checkpoint, forget="3,5")
    assert forget_set_pick(at).value == "3-5"  # the sidebar's set is a benchmarked pair
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert source.value == layout.BENCHMARK
    assert any(h.value.startswith("Cost at parity: 75 forget requests") for h in at.subheader)
    (chart,) = at.get("vega_lite_chart")  # st.bar_chart: stacked bars of WF's round, measured and guessed requests
    data = chart_data(chart)
    series = data.filter(like="color").iloc[:, 0]
    assert set(series) == {layout.ROUND, layout.MEASURED, layout.EXTRAPOLATED}
    seconds = data.filter(like="value").iloc[:, 0]
    methods = data["method"]
    assert seconds[(methods == "WF (weight filtering)") & (series == layout.ROUND)].tolist() == [18.0]  # marked
    assert seconds[(methods == "SSD") & (series == layout.EXTRAPOLATED)].tolist() == [20 * 5.0]  # flagged
    spec = json.loads(chart.proto.spec)
    assert spec["encoding"]["x"]["title"] == "seconds" and spec["encoding"]["y"]["sort"] is None  # fastest first
    assert any("10 of 1 class, 45 of 2 classes, 20 of 3 classes" in c.value and "18.0 s" in c.value for c in at.caption)
    (cost,) = [d.value for d in at.dataframe if "total (s) ↓" in d.value.columns]
    assert list(cost.index[:2]) == ["WF (weight filtering)", "SSD"]  # fastest first
    assert cost.loc["WF (weight filtering)", "total (s) ↓"] == 168.0 and cost.loc["SSD", "extrapolated sizes"] == "3"
    assert cost.loc["Fine-tune", "tuning (s)"] == 24.0

    tuning = next(e for e in at.expander if e.label == "Tuning (validation split only)")
    assert any("hand-made" in m.value for m in tuning.markdown)  # the rule
    grid, chosen = (d.value for d in tuning.dataframe)
    assert grid.loc["SSD", "grid"] == "alpha ∈ {6.0, 10.0}" and grid.loc["SSD", "points per set"] == 2
    row = chosen[(chosen["method"] == "SSD") & (chosen["forget set"] == "1: 1 + 4: 4")].iloc[0]
    assert row["chosen"] == "alpha = 10.0" and row["distance to Retrain (val.) ↓"] == 0.02
    assert chosen[chosen["method"] == "WF (weight filtering)"]["chosen"].eq("steps = 468").all()

    assert [c.value for c in at.main.code] == [command(checkpoint)]
    assert shlex.split(at.main.code[0].value)[3] == checkpoint.name  # from its parent: the server's path stays private
    assert str(checkpoint.parent) not in at.main.code[0].value


@needs_checkpoint
def test_banners_for_an_older_or_untuned_benchmark(checkpoint, make_bench, make_old_bench, open_compare):
    (checkpoint / "benchmark.json").write_text(json.dumps(make_old_bench()))
    at = open_compare(checkpoint, forget="5")
    assert any(w.value.startswith("Protocol: earlier") and "not comparable" in w.value for w in at.warning)
    assert forget_set_pick(at).options == ["single classes (mean of 2)", "3: 3", "5: 5"]
    tables = family_tables(at)
    assert list(tables[-1].columns) == ["mia_efficacy", "zrf", "relearn_steps"]  # the old metrics: "Other"
    assert comparison.column_header("zrf_paper") not in methods_table(at).columns  # measured for no method
    titles = [m.value for m in at.markdown if m.value.startswith("**")]
    assert "**Other**" in titles
    tuning = next(e for e in at.expander if e.label == "Tuning (validation split only)")
    assert any("not tuned" in c.value for c in tuning.caption)
    assert len(at.get("plotly_chart")) == 3  # per_class read as per_set: the A/B bars and the predictions still drawn

    bench = make_bench()
    bench["selection"]["tuned"] = False
    (checkpoint / "benchmark.json").write_text(json.dumps(bench))
    at = open_compare(checkpoint, forget="5")
    assert [w.value for w in at.warning if w.value.startswith("Untuned")]
    assert not [w for w in at.warning if "Protocol" in w.value]
    bench["selection"].update(tuned=True, validation={**bench["selection"]["validation"], "seen_by_backbone": True})
    (checkpoint / "benchmark.json").write_text(json.dumps(bench))
    at = open_compare(checkpoint, forget="5")
    assert [w.value for w in at.warning if "seen by the backbone" in w.value]


@needs_checkpoint
def test_hostile_class_names_in_the_set_selector(checkpoint, make_bench, open_compare):
    """Class names are data: the selector shows them as plain text on one line (a selectbox renders no markdown),
    and wherever they enter markdown they are escaped."""
    bench = make_bench()
    evil = "**bold** [click](http://e.vil) <b>x</b>\n# heading"
    bench["class_names"][3] = evil
    (checkpoint / "benchmark.json").write_text(json.dumps(bench))
    at = open_compare(checkpoint, forget="3,5")
    pick = forget_set_pick(at)
    shown = "3: **bold** [click](http://e.vil) <b>x</b> # heading"[:3 + 40] + "…"  # one line, cut to 40 characters
    assert pick.options[2] == shown and pick.options[4] == f"{shown} + 5: 5"
    assert all("\n" not in o for o in pick.options)
    rendered = [*(m.value for m in (*at.markdown, *at.caption, *at.warning, *at.info, *at.subheader)),
                *(o for r in at.radio for o in r.options)]
    assert not [t for t in rendered if "[click](" in t or "<b>" in t or "**bold**" in t]  # never raw markdown/HTML
    assert any("\\[click\\]\\(http\\://e.vil\\)" in o for r in at.radio for o in r.options)  # escaped


@needs_checkpoint
def test_page_without_benchmark_then_run_one(checkpoint, monkeypatch, make_bench, open_compare):
    at = open_compare(checkpoint, forget="2")
    assert any("No benchmark for this checkpoint yet" in i.value and "Run a benchmark" in i.value for i in at.info)
    assert [c.value for c in at.main.code] == [command(checkpoint)]  # the only place the directory is shown
    assert not any(str(checkpoint.parent) in m.value for m in (*at.info, *at.markdown, *at.caption))  # no server path
    assert not [d for d in at.dataframe]

    calls = []

    def fake_run_benchmark(path, config, progress, should_stop):
        calls.append({"path": path, "forget_classes": list(config.forget_classes), "seeds": config.seeds,
                      "out": config.out, "tune": config.tune})
        progress(1, 2, {"method": "retrain", "forget_class": 2, "seed": 0})
        assert not should_stop()
        progress(2, 2, {"method": "wf", "forget_class": 2, "seed": 0})
        bench = make_bench(classes=(2,), combos=(), methods=("original", "retrain", "wf"))
        bench["selection"]["tuned"], bench["tuning"] = False, None  # the quick run: untuned
        return bench

    monkeypatch.setattr(wfexplain.benchmark.runner, "run_benchmark", fake_run_benchmark, raising=False)
    at.button(key="compare_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.session_state["compare_job"].join(30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert calls == [{"path": str(checkpoint.resolve()), "forget_classes": [2], "seeds": 1, "out": None,
                      "tune": False}]
    assert not (checkpoint / "benchmark.json").exists()
    assert any("this session" in s.value for s in at.success)
    assert list(methods_table(at).index) == [comparison.method_label(m) for m in ("original", "retrain", "wf")]
    assert not any("No benchmark for this checkpoint yet" in i.value for i in at.info)
    assert any(w.value.startswith("Untuned") for w in at.warning)

    at.button(key="compare_drop_result").click().run()  # back to the (missing) file
    assert any("No benchmark for this checkpoint yet" in i.value for i in at.info)


def chart_data(chart) -> pd.DataFrame:
    """The data of a Vega-Lite chart (st.bar_chart): Arrow IPC, long form."""
    import pyarrow as pa

    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_pandas()


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
    assert [len(t.columns) for t in tables] == [2, 2, 2, 3, 2, 2, 1]  # narrow tables, not one of fourteen columns
    assert [c for t in tables for c in t.columns] == [comparison.column_header(m) for m in METRICS]
    assert all(layout.text_width(t) <= layout.MAX_TABLE_CHARS for t in tables)
    titles = [m.value for m in at.markdown if m.value.startswith("**")]
    assert titles[:7] == ["**Forgetting (1/2)**", "**Forgetting (2/2)**", "**Utility**", "**Privacy**",
                          "**Residual knowledge (1/2)**", "**Residual knowledge (2/2)**", "**Cost**"]


@needs_checkpoint
def test_ab_view_of_a_two_class_live_forget_set(checkpoint, make_bench, open_compare):
    """A sidebar set of two classes: WF live vs Original on the evaluation subset, matching the model's own
    per-class accuracies; the benchmark's class stays available on its own images, never mixed."""
    bench = make_bench(combos=((1, 4),))  # the sidebar's pair (3, 5) is not benchmarked
    (checkpoint / "benchmark.json").write_text(json.dumps(bench))
    at = open_compare(checkpoint, forget="3,5")
    assert forget_set_pick(at).value == "3"  # the set's first class benchmarked alone
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert source.value == layout.LIVE
    assert any("(3: 3, 5: 5) has 2 classes and was not benchmarked" in c.value for c in at.caption)
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
    assert bar_values(a) == pytest.approx(bench["per_set"]["3"]["wf"]["per_class_accuracy"])
    assert bar_values(b) == pytest.approx(bench["per_set"]["3"]["retrain"]["per_class_accuracy"])
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




@needs_checkpoint
def test_the_deletion_curves_measured_with_the_benchmark(checkpoint, make_bench, open_compare):
    """The benchmark's `explanations` section: the chosen set's AUCs and the sentence; the mean over classes without
    a chosen set; a plain note when a benchmark has none."""
    def aucs(memory: float) -> dict:
        row = {"class_drop": memory + 0.05, "others_drop": 0.05, "selectivity": memory}
        return {"memory": row, "activation": {**row, "selectivity": 0.3}, "grad_x_activation": {**row, "selectivity": 0.4},
                "random": {**row, "selectivity": 0.0, "selectivity_std": 0.01}}

    bench = make_bench()
    bench["explanations"] = {"fractions": [0.05, 0.1], "num_images": 1000, "num_train_images": 2000,
                             "classes": {"5": {"rankings": {r: {"auc": a} for r, a in aucs(0.71).items()}}},
                             "sets": {}, "summary": aucs(0.62)}
    (checkpoint / "benchmark.json").write_text(json.dumps(bench))
    at = open_compare(checkpoint, forget="5")
    (table,) = [t.value for t in at.dataframe if "selectivity" in t.value.columns]
    assert table["selectivity"].tolist()[0] == pytest.approx(0.71)  # class 5's own curves
    assert any("For forget set 5" in c.value and "1000 test images" in c.value for c in at.caption), [
        c.value for c in at.caption if "switched off" in c.value]
    forget_set_pick(at).set_value("all-2").run()  # no curves for a pair here: the mean over classes
    (table,) = [t.value for t in at.dataframe if "selectivity" in t.value.columns]
    assert table["selectivity"].tolist()[0] == pytest.approx(0.62)
    del bench["explanations"]
    (checkpoint / "benchmark.json").write_text(json.dumps(bench))
    at = open_compare(checkpoint, forget="5")
    assert any("has no deletion curves" in c.value for c in at.caption)
