"""The Compare page: benchmark tables from hand-made numbers, its figures, and the page through AppTest.

The page tests use a temporary copy of the small shipped ``mnist-cnn`` checkpoint (opened with
``?ckpt=<dir>``) with a synthetic ``benchmark.json``; ``run_benchmark`` is replaced by a fake.
"""

import base64
import json
import math
import os
import shutil
from itertools import combinations
from pathlib import Path

os.environ.setdefault("WFEXPLAIN_EVAL_LIMIT", "500")  # read by dashboard.settings at import

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

import wfexplain
import wfexplain.benchmark.runner
from wfexplain import figures
from wfexplain.benchmark import comparison, layout
from wfexplain.benchmark.catalogue import METRICS
from wfexplain.data import subset_tensors
from wfexplain.figures.comparison import LINE_PX, PLOT_PX, SCALES, label_box, place_labels
from wfexplain.splits import checkpoint_split
from wfexplain_dashboard.settings import EVAL_LIMIT

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "wfexplain_dashboard" / "app.py")
SOURCE = ROOT / "checkpoints" / "mnist-cnn"
TIMEOUT = 180
NAMES = [str(i) for i in range(10)]
SHIPPED = sorted((ROOT / "checkpoints").glob("*/benchmark.json"))
ALL = ("original", "retrain", "wf", "finetune", "neggrad_plus", "random_labels", "salun", "ssd")


def ms(mean, std=0.0) -> dict:
    return {"mean": mean, "std": std}


def hand_metrics(method: str, shift: float = 0.0) -> dict:
    """Metrics with a known best per column among the non-reference methods."""
    fa = {"original": 0.99, "retrain": 0.0, "wf": 0.01, "finetune": 0.30, "neggrad_plus": 0.05, "random_labels": 0.02,
          "salun": 0.03, "ssd": 0.20}[method]
    ra = {"original": 0.99, "retrain": 0.98, "wf": 0.97, "finetune": 0.975, "neggrad_plus": 0.90, "random_labels": 0.93,
          "salun": 0.96, "ssd": 0.94}[method]
    secs = {"retrain": 100.0, "wf": 20.0, "finetune": 10.0, "neggrad_plus": 16.0, "random_labels": 15.0, "salun": 30.0,
            "ssd": 5.0}.get(method)
    out = {"forget_accuracy_test": ms(fa + shift, 0.01), "retain_accuracy_test": ms(ra - shift, 0.002),
           "forget_accuracy_train": ms(fa, 0.01), "retain_accuracy_train": ms(ra, 0.0),
           "mia_efficacy": ms(1 - fa, 0.05), "zrf": ms(0.9 if method == "salun" else 0.5, 0.01),
           "relearn_steps": ms({"wf": 40.0, "retrain": 60.0}.get(method, 10.0), 2.0),
           "probe_accuracy": ms(fa + 0.1, 0.02)}
    if secs is not None:  # "original" has no time
        out["seconds"] = ms(secs, 1.0)
    return out


def make_bench(classes=(3, 5), methods=ALL) -> dict:
    per_class = {}
    for c in classes:
        per_class[str(c)] = {}
        for m in methods:
            acc = [0.98] * 10
            acc[c] = hand_metrics(m)["forget_accuracy_test"]["mean"]
            preds = [0.0] * 10
            if m == "original":
                preds[c] = 1.0
            else:
                preds[(c + 1) % 10], preds[(c + 2) % 10] = 0.7, 0.3
            per_class[str(c)][m] = {"metrics": hand_metrics(m, 0.001 * c), "per_class_accuracy": acc,
                                    "forget_predictions": preds}
    return {
        "checkpoint": "x", "dataset": "mnist", "backbone": "cnn", "class_names": NAMES, "forget_classes": list(classes),
        "seeds": 2, "num_test_images": 1000, "created": "2025-01-01T00:00:00+00:00", "command": "wfexplain benchmark",
        "methods": {m: hand_metrics(m) for m in methods}, "per_class": per_class,
        "cost": {"wf_all_classes_seconds": 20.0, "retrain_one_class_seconds": 100.0, "ratio": 0.2,
                 "one_class_seconds": {m: hand_metrics(m)["seconds"]["mean"] for m in methods if m != "original"}},
        "config": {"wf": {"steps": 2000}, "finetune": {"epochs": 5}},
    }


# ---------------------------------------------------------------- pure functions


def test_read_benchmark_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"benchmark\.json does not exist.*wfexplain benchmark --checkpoint"):
        comparison.read_benchmark(tmp_path)
    file = tmp_path / "benchmark.json"
    file.write_text("{not json")
    with pytest.raises(ValueError, match=r"benchmark\.json is not valid JSON"):
        comparison.read_benchmark(tmp_path)
    file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        comparison.read_benchmark(file)
    bench = make_bench()
    del bench["per_class"]
    file.write_text(json.dumps(bench))
    with pytest.raises(ValueError, match=rf"{tmp_path}.*benchmark\.json has no 'per_class' key"):
        comparison.read_benchmark(tmp_path)
    file.write_text(json.dumps(make_bench()).replace('"zrf": {"mean": 0.5', '"zrf": {"mean": NaN'))
    assert comparison.read_benchmark(file)["class_names"] == NAMES  # NaN (json.dumps's output) is accepted


def test_comparison_table_mean_and_per_class_with_missing_values():
    bench = make_bench()
    bench["methods"]["wf"]["zrf"] = {"mean": None, "std": None}  # JSON null
    table = comparison.comparison_table(bench)
    assert list(table.index) == list(ALL)  # original, retrain, then METHODS order
    assert list(table.columns.get_level_values("metric").unique()) == list(METRICS)
    assert table.loc["wf", ("retain_accuracy_test", "mean")] == 0.97
    assert table.loc["wf", ("retain_accuracy_test", "std")] == 0.002
    assert math.isnan(table.loc["original", ("seconds", "mean")])  # no time for the original model
    assert math.isnan(table.loc["wf", ("zrf", "mean")])
    per = comparison.comparison_table(bench, 5)
    assert per.loc["wf", ("forget_accuracy_test", "mean")] == pytest.approx(0.015)  # 0.01 + 0.001 * 5
    with pytest.raises(KeyError, match="forget class 7 was not benchmarked"):
        comparison.comparison_table(bench, 7)


def test_gap_to_retrain_and_best_per_column_follow_direction():
    table = pd.DataFrame({"forget_accuracy_test": [0.9, 0.0, 0.1, 0.05, 0.3],
                          "retain_accuracy_test": [0.99, 0.95, 0.97, 0.90, 0.999],
                          "seconds": [math.nan, 100.0, 20.0, 5.0, math.nan],
                          "zrf": [math.nan] * 5},
                         index=["original", "retrain", "wf", "ssd", "finetune"])
    gap = comparison.gap_to_retrain(table)
    assert gap.loc["wf", "forget_accuracy_test"] == pytest.approx(0.1)
    assert gap.loc["ssd", "retain_accuracy_test"] == pytest.approx(-0.05)
    assert gap.loc["retrain"].fillna(0).eq(0).all()
    assert math.isnan(gap.loc["finetune", "seconds"])
    best = comparison.best_per_column(table)
    # Closest to Retrain: forget acc. 0.05 away (ssd); retain 0.02 away (wf, although finetune's 0.999 is higher:
    # Retrain's 0.95 is the target); references never compete. Time: lower is better, NaN skipped; zrf: nobody.
    assert best == {"forget_accuracy_test": ["ssd"], "retain_accuracy_test": ["wf"], "seconds": ["ssd"]}
    tied = table.copy()
    tied.loc["finetune", "forget_accuracy_test"] = 0.05  # as close to Retrain as ssd
    assert comparison.best_per_column(tied)["forget_accuracy_test"] == ["ssd", "finetune"]
    shown = comparison.formatted_table(tied)
    header = comparison.column_header("forget_accuracy_test")
    assert shown.loc["SSD", header].endswith("★ (tie)") and shown.loc["Fine-tune", header].endswith("★ (tie)")
    assert comparison.gap_to_retrain(table.drop(index="retrain")).isna().all().all()


def test_pareto_front_on_a_hand_made_set():
    points = [
        (0.9, 0.9, 10.0),  # 0: front
        (0.8, 0.8, 20.0),  # 1: dominated by 0
        (1.0, 0.5, 50.0),  # 2: front (best forget quality)
        (0.5, 0.95, 60.0),  # 3: front (best retain accuracy)
        (0.1, 0.1, 1.0),  # 4: front (fastest)
        (0.9, 0.9, 10.0),  # 5: equal to 0: neither dominates the other
        (0.9, 0.9, 11.0),  # 6: dominated by 0 on time only
        (math.nan, 1.0, 0.5),  # 7: NaN: never on the front, dominates nothing
    ]
    assert comparison.pareto_front(points) == [0, 2, 3, 4, 5]
    assert comparison.pareto_front([]) == []


def test_formatted_table_marks_best_and_gaps():
    shown = comparison.formatted_table(comparison.comparison_table(make_bench()))
    header = comparison.column_header("forget_accuracy_test")
    assert header == "Forget acc. (test) (%) ↓"
    assert comparison.column_header("zrf") == "ZRF ↑"
    assert list(shown.index) == [comparison.method_label(m) for m in ALL]
    assert shown.loc["WF (weight filtering)", header] == "1.0 ± 1.0 [+1.0] ★"
    assert shown.loc["Retrain (oracle)", header] == "0.0 ± 1.0"  # references: no gap, no star
    assert shown.loc["Original (no unlearning)", comparison.column_header("seconds")] == "–"
    assert shown.loc["SSD", comparison.column_header("seconds")] == "5 ± 1 [-95] ★"
    stars = shown.apply(lambda col: col.str.contains(comparison.BEST_MARK).sum())
    zrf = comparison.column_header("zrf")
    assert (stars.drop(zrf) == 1).all()
    # ZRF: Retrain's 0.5 is the target, so SalUn's higher 0.9 is not best; the five methods at 0.5 tie.
    assert not shown.loc["SalUn", zrf].endswith("★") and stars[zrf] == 5
    assert shown.loc["WF (weight filtering)", zrf].endswith("★ (tie)")


def test_degraded_benchmark_without_retrain_or_some_metrics():
    bench = make_bench(methods=("original", "wf", "ssd"))
    bench["methods"]["ssd"] = {"zrf": 0.4}  # a bare number, no std; every other metric missing
    table = comparison.comparison_table(bench)
    assert comparison.gap_to_retrain(table).isna().all().all()
    assert comparison.best_per_column(table)["zrf"] == ["wf"]  # no Retrain: by direction, 0.5 > 0.4
    shown = comparison.formatted_table(table)
    assert shown.loc["SSD", "ZRF ↑"] == "0.4"
    assert shown.loc["SSD", comparison.column_header("seconds")] == "–"
    assert shown.loc["WF (weight filtering)", comparison.column_header("seconds")] == "20 ± 1 ★"  # no gap: no Retrain
    pts = comparison.tradeoff_points(table)
    assert list(pts.index[pts["pareto"]]) == ["wf"]  # ssd has no coordinates


def test_tradeoff_points_and_prediction_distances():
    pts = comparison.tradeoff_points(comparison.comparison_table(make_bench()))
    assert "original" not in pts.index
    assert pts.loc["wf", "forget_quality"] == pytest.approx(0.99)
    front = set(pts.index[pts["pareto"]])
    assert {"retrain", "ssd", "finetune"} <= front and "neggrad_plus" not in front
    d = comparison.prediction_distances({"retrain": [0.0, 0.7, 0.3], "wf": [0.0, 0.7, 0.3], "x": [1.0, 0.0, 0.0]})
    assert d == {"retrain": 0.0, "wf": 0.0, "x": 1.0}
    assert comparison.prediction_distances({"wf": [1.0]}) == {}


def test_figures_build():
    fig = figures.tradeoff_scatter(["a", "b", "c"], [0.9, 0.5, 0.1], [0.9, 0.95, 0.2], [10.0, math.nan, 1.0],
                                   front=[0, 1], original_retain=0.99)
    names = [t.name for t in fig.data]
    assert names == ["a · 10 s · Pareto", "b · no time · Pareto", "c · 1 s", "Pareto front (ringed)"]
    assert fig.data[1].marker.symbol.endswith("-open")  # no time: an open symbol
    assert fig.layout.shapes[0].y0 == 0.99  # the original model's retain accuracy
    (line,) = [t for t in fig.data if t.name == "Pareto front (ringed)"]
    assert list(line.x) == [0.5, 0.9]
    fig = figures.ab_accuracy_bars([0.9, 0.0, 0.8], [0.9, 0.1, 0.7], ["a", "b", "c"], [1], "WF", "Retrain",
                                   "the benchmark's 1,000 test images")
    assert list(fig.data[0].x) == ["a", "b (forgotten)", "c"] and len(fig.data) == 2
    assert "the benchmark's 1,000 test images" in fig.layout.title.text.replace("<br>", " ")
    fig = figures.forget_predictions_heatmap({"wf": [0.0, 0.5, 0.5], "retrain": [0.0, 1.0, 0.0]}, ["a", "b", "c"], 0,
                                             distances={"wf": 0.5})
    assert list(fig.data[0].y) == ["retrain", "wf (TV 0.50)"]
    assert fig.data[0].x[0] == "a (true class)"
    with pytest.raises(ValueError):
        figures.ab_accuracy_bars([0.9], [0.9, 0.1], ["a"], [0])


# ---------------------------------------------------------------- the table fits the page


def test_metric_groups_split_every_metric_into_narrow_tables():
    groups = layout.metric_groups(list(METRICS))
    assert [t for t, _ in groups] == ["Forgetting", "Utility and cost", "Privacy and residual knowledge"]
    flat = [m for _, ms in groups for m in ms]
    assert sorted(flat) == sorted(METRICS) and len(flat) == len(set(flat))  # every metric, once
    assert all(len(ms) <= layout.MAX_COLUMNS for _, ms in groups)
    assert layout.metric_groups([*METRICS, "a", "b", "c", "d"])[-2:] == [("Other", ["a", "b", "c"]),
                                                                             ("Other", ["d"])]
    assert layout.metric_groups(["seconds", "zrf"]) == [("Forgetting", ["zrf"]), ("Utility and cost", ["seconds"])]
    frame = pd.DataFrame({"ab": ["1", "12345"]}, index=pd.Index(["x", "yyy"], name="method"))
    assert layout.text_width(frame) == len("method") + len("12345")


@pytest.mark.parametrize("source", ["hand-made", *SHIPPED], ids=str)
def test_every_family_table_is_narrow_enough(source):
    """Each family table stays under MAX_TABLE_CHARS characters a row: no horizontal scrolling on a wide page."""
    bench = make_bench() if source == "hand-made" else comparison.read_benchmark(source)
    for c in [None, *comparison.benchmarked_classes(bench)]:
        table = comparison.comparison_table(bench, c)
        shown = comparison.formatted_table(table)
        for _, metrics in layout.metric_groups(list(comparison.means(table).columns)):
            part = shown[[comparison.column_header(m) for m in metrics]]
            assert layout.text_width(part) <= layout.MAX_TABLE_CHARS, part.to_string()


def test_long_times_are_shown_without_exponents():
    table = pd.DataFrame({"seconds": [4086.6, 1030.8]}, index=["retrain", "wf"])
    assert comparison.formatted_table(table)["Time (s) ↓"].tolist() == ["4087", "1031 [-3056] ★"]


def test_ab_default_source_and_live_set_note():
    bench, live = layout.BENCHMARK, layout.LIVE
    assert layout.ab_default_source((), 3, True) == bench  # no live set: the benchmark's class
    assert layout.ab_default_source((3,), 3, True) == bench
    assert layout.ab_default_source((3, 5), 3, True) == live  # several classes: only live covers them
    assert layout.ab_default_source((5,), 3, True) == live
    assert layout.ab_default_source((3,), 3, False) == live
    assert layout.ab_default_source((), None, True) == live
    note = lambda f: layout.live_set_note(f, [3, 5], NAMES)  # noqa: E731
    assert note(()).startswith("No forget set")
    assert "(3: 3, 5: 5) has 2 classes" in note((5, 3)) and "only for single benchmarked" in note((3, 5))
    assert "was not benchmarked" in note((4,))
    assert note((5,)).startswith("Class 5: 5 is benchmarked")


# ---------------------------------------------------------------- trade-off labels

METHOD_NAMES = ["Retrain (oracle)", "WF (weight filtering)", "Fine-tune", "NegGrad+", "Random labels", "SalUn", "SSD"]
CROWD = ([1.0, 0.99667, 1.0, 0.99967, 1.0, 1.0, 0.934],  # fmnist-resnet18's benchmark: five points within 0.4 pp
         [0.9229, 0.91996, 0.92304, 0.92648, 0.92552, 0.9253, 0.88856], [4086.6, 1030.8, 63.0, 48.2, 49.0, 74.7, 101.3])
SPREAD = ([1.0, 0.9, 0.5, 0.2, 0.7, 0.1, 0.35], [0.95, 0.7, 0.9, 0.6, 0.8, 0.95, 0.75], [100, 20, 10, 16, 15, 30, 5])
SAME = ([0.99] * 7, [0.93] * 7, [10.0] * 6 + [math.nan])  # every point on top of the others


def label_boxes(fig, scale: float = 1.0) -> list[tuple[float, float, float, float]]:
    """(centre x, centre y, w, h) in pixels of every text on the plot area, PLOT_PX wide times ``scale``."""
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    w_px, h_px = PLOT_PX[0] * scale, PLOT_PX[1]
    boxes = []
    for a in fig.layout.annotations:
        w, h = label_box(a.text)
        if (a.name or "").startswith("label: "):
            boxes.append(((a.x - x0) / (x1 - x0) * w_px + a.xshift, (a.y - y0) / (y1 - y0) * h_px + a.yshift, w, h))
        else:  # the dotted line's label, at the left edge, under the line
            line = fig.layout.shapes[0].y0
            boxes.append((w / 2, (line - y0) / (y1 - y0) * h_px - LINE_PX / 2, w, h))
    return boxes


@pytest.mark.parametrize("points", [CROWD, SPREAD, SAME], ids=["crowd", "spread", "same"])
def test_tradeoff_labels_never_overlap_and_every_method_is_in_the_legend(points):
    fig = figures.tradeoff_scatter(METHOD_NAMES, *points, front=[3, 4], original_retain=0.916)
    legend = [t.name for t in fig.data if t.name != "Pareto front (ringed)"]
    assert [n.split(" · ")[0] for n in legend] == METHOD_NAMES  # every method, once, named with its time
    assert all(t.showlegend is not False for t in fig.data)
    labelled = [a.text for a in fig.layout.annotations if (a.name or "").startswith("label: ")]
    assert len(labelled) == len(set(labelled))
    for scale in SCALES:  # a wider chart only moves points apart
        for (x1, y1, w1, h1), (x2, y2, w2, h2) in combinations(label_boxes(fig, scale), 2):
            assert abs(x1 - x2) >= (w1 + w2) / 2 or abs(y1 - y2) >= (h1 + h2) / 2, (x1, y1, x2, y2)
    if points is SPREAD:
        assert labelled == METHOD_NAMES  # room for all: every point labelled
    elif points is CROWD:
        assert "SSD" in labelled and len(labelled) < len(METHOD_NAMES)  # the cluster: named by the legend only
    else:
        assert labelled == []  # no label could tell which of the stacked points it names


def test_place_labels_by_hand():
    assert place_labels([(100, 100), (400, 200)], [8, 8], ["a", "b"]) == [(0.0, 8 + 3 + LINE_PX / 2)] * 2  # above
    assert place_labels([(100, 100), (100, 100)], [8, 8], ["a", "b"]) == [None, None]  # equidistant: ambiguous
    assert place_labels([(100, 322)], [8], ["a"]) == [(0.0, -(8 + 3 + LINE_PX / 2))]  # no room above: below
    assert place_labels([(math.nan, 1.0)], [8], ["a"]) == [None]
    blocked = [(0.0, 100 + 8 + 3 + LINE_PX / 2, 60.0, LINE_PX, 30.0)]  # a box above the point
    assert place_labels([(30, 100)], [8], ["a"], blocked=blocked) == [(0.0, -(8 + 3 + LINE_PX / 2))]


# ---------------------------------------------------------------- the page

needs_checkpoint = pytest.mark.skipif(not (SOURCE / "manifest.json").is_file(), reason="checkpoints/mnist-cnn is missing")


@pytest.fixture
def checkpoint(tmp_path, monkeypatch) -> Path:
    target = tmp_path / "mnist-copy"
    shutil.copytree(SOURCE, target)
    monkeypatch.setenv("WFEXPLAIN_CHECKPOINT_DIRS", str(target))  # a root that is itself a checkpoint
    return target


def public_id(ckpt: Path) -> str:
    return f"{ckpt.parent.name}/{ckpt.name}"


def open_compare(ckpt: Path, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["ckpt"] = public_id(ckpt)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("views/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Compare"]
    return at


def family_tables(at: AppTest) -> list[pd.DataFrame]:
    """The methods x metrics tables, one per family (the gap tables have no reference rows, the cost table one
    column, headed by the time)."""
    return [d.value for d in at.dataframe
            if "Retrain (oracle)" in d.value.index and not str(d.value.columns[0]).startswith("time to forget")]


def methods_table(at: AppTest) -> pd.DataFrame:
    """The family tables side by side: the whole methods x metrics table."""
    return pd.concat(family_tables(at), axis=1)


@needs_checkpoint
def test_page_shows_the_benchmark(checkpoint):
    (checkpoint / "benchmark.json").write_text(json.dumps(make_bench()))
    at = open_compare(checkpoint, forget="5")
    assert at.session_state["_view"].path == str(checkpoint.resolve())
    (pick,) = [s for s in at.selectbox if s.label == "Forget class"]
    assert pick.value == 5  # the sidebar's forget class, benchmarked
    table = methods_table(at)
    assert list(table.index) == [comparison.method_label(m) for m in ALL]
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
    assert list(methods_table(at).index) == [comparison.method_label(m) for m in ALL]
    assert any("Pick a single forget class" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 2  # trade-off and the A/B bars, live: no benchmark class to show
    (source,) = [r for r in at.radio if r.label.startswith("Images")]
    assert len(source.options) == 1 and source.value == layout.LIVE


@needs_checkpoint
def test_page_without_benchmark_then_run_one(checkpoint, monkeypatch):
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
def test_page_tables_fit_the_page(checkpoint):
    (checkpoint / "benchmark.json").write_text(json.dumps(make_bench()))
    at = open_compare(checkpoint, forget="3")
    tables = family_tables(at)
    assert [len(t.columns) for t in tables] == [3, 3, 3]  # three narrow tables, not one of nine columns
    assert sorted(c for t in tables for c in t.columns) == sorted(comparison.column_header(m) for m in METRICS)
    assert all(layout.text_width(t) <= layout.MAX_TABLE_CHARS for t in tables)
    titles = [m.value for m in at.markdown if m.value.startswith("**")]
    assert titles[:3] == ["**Forgetting**", "**Utility and cost**", "**Privacy and residual knowledge**"]


@needs_checkpoint
def test_ab_view_of_a_two_class_live_forget_set(checkpoint):
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


def test_a_benchmark_of_other_weights_is_flagged(checkpoint):
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


def test_shipped_benchmarks_describe_the_shipped_weights():
    for bench_file in sorted((ROOT / "checkpoints").glob("*/benchmark.json")):
        bench = json.loads(bench_file.read_text())
        files = wfexplain.load(bench_file.parent).manifest.files
        assert bench["weights"] == files, bench_file


def test_benchmark_csv_holds_every_number_in_long_form():
    """benchmark.csv: one row per (forget class or "all", method, metric), the same numbers as the JSON."""
    import io

    from wfexplain.benchmark.reports import benchmark_csv

    bench = json.loads((ROOT / "checkpoints" / "fmnist-cnn" / "benchmark.json").read_text())
    df = pd.read_csv(io.BytesIO(benchmark_csv(bench)), dtype={"forget_class": str})
    classes = comparison.benchmarked_classes(bench)
    assert list(df.columns) == ["forget_class", "method", "metric", "mean", "std", "gap_to_retrain"]
    assert len(df) == (1 + len(classes)) * len(bench["methods"]) * len(METRICS)
    row = df[(df.forget_class == "all") & (df.method == "wf") & (df.metric == "forget_accuracy_test")].iloc[0]
    assert math.isclose(row["mean"], bench["methods"]["wf"]["forget_accuracy_test"]["mean"], rel_tol=1e-8)
    retrain = bench["methods"]["retrain"]["forget_accuracy_test"]["mean"]
    assert math.isclose(row["gap_to_retrain"], row["mean"] - retrain, rel_tol=1e-6, abs_tol=1e-12)
    assert (ROOT / "checkpoints" / "fmnist-cnn" / "benchmark.csv").read_bytes() == benchmark_csv(bench)  # shipped, current
