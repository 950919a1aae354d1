"""The Compare page's tables and figures (wfexplain.benchmark.comparison, layout; wfexplain.figures.comparison) from
hand-made numbers (``make_bench``, conftest.py) and the shipped benchmarks. The page itself:
tests/wfexplain_dashboard/test_compare.py."""

import json
import math
from itertools import combinations

import pandas as pd
import pytest

import wfexplain
from tests import ROOT
from wfexplain import figures
from wfexplain.benchmark import comparison, layout
from wfexplain.benchmark.catalogue import METRICS
from wfexplain.figures.comparison import LINE_PX, PLOT_PX, SCALES, label_box, place_labels

NAMES = [str(i) for i in range(10)]  # make_bench's class names
SHIPPED = sorted((ROOT / "checkpoints").glob("*/benchmark.json"))
ALL = ("original", "retrain", "wf", "finetune", "neggrad_plus", "random_labels", "salun", "ssd")  # make_bench's methods


# ---------------------------------------------------------------- pure functions


def test_read_benchmark_errors(tmp_path, make_bench):
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


def test_comparison_table_mean_and_per_class_with_missing_values(make_bench):
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


def test_formatted_table_marks_best_and_gaps(make_bench):
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


def test_degraded_benchmark_without_retrain_or_some_metrics(make_bench):
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


def test_tradeoff_points_and_prediction_distances(make_bench):
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
def test_every_family_table_is_narrow_enough(source, make_bench):
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
