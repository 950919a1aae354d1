"""Compare: WF against the Retrain oracle and the baselines, from the checkpoint's benchmark.json."""

import math

import pandas as pd
import streamlit as st

from wfexplain import figures
from wfexplain.benchmark import comparison, layout, reports
from wfexplain.benchmark.catalogue import METRICS
from wfexplain_dashboard.job_panel import job_panel, running, start_job
from wfexplain_dashboard.jobs import Job
from wfexplain_dashboard.resources import current, eval_data, predictions
from wfexplain_dashboard.scoring import live_scores
from wfexplain_dashboard.settings import job_caps
from wfexplain_dashboard.text import escape_markdown, public_text

JOB, RESULT, COLLECTED = "compare_job", "compare_result", "compare_collected"
MEAN = "mean"  # the forget-class choice "all classes (mean)"


def md(value, limit: int = 100) -> str:
    """Data (a class name, a benchmark.json field) escaped for a line of markdown: nothing in it links or formats."""
    return escape_markdown(str(value), limit)


view = current()
st.title("Compare")
st.caption("Weight filtering (WF) against the Retrain oracle (trained from scratch without the forgotten class) and "
           "the baseline unlearning methods, on every metric of `wfexplain benchmark`. Cells are mean ± std over "
           "seeds; [brackets] = gap to Retrain (percentage points for accuracies); ↑/↓ = higher/lower is better.")


def _collect() -> None:
    """Keep a finished run's result in the session (once per job)."""
    job: Job | None = st.session_state.get(JOB)
    if job is None or st.session_state.get(COLLECTED) is job:
        return
    s = job.state()
    if s.done and not s.error and not s.cancelled and s.result and s.result.get("bench"):
        st.session_state[RESULT] = {"path": s.result["path"], "bench": s.result["bench"]}
        st.session_state[COLLECTED] = job


def _seconds(v) -> str:
    v = comparison.as_float(v)
    return "—" if math.isnan(v) else f"{v:,.1f} s" if v < 600 else f"{v / 60:,.1f} min"


def _show(bench: dict, from_session: bool) -> None:
    names = [str(n) for n in bench["class_names"]]
    name = lambda i: names[i] if 0 <= i < len(names) else str(i)  # noqa: E731
    classes = comparison.benchmarked_classes(bench)
    if from_session:
        st.success("Showing the benchmark run in this session (not saved to benchmark.json).")
        if st.button("Show the saved benchmark.json instead", key="compare_drop_result"):
            del st.session_state[RESULT]
            st.rerun()
    else:
        st.caption(f"From `{view.name}/benchmark.json`" + (f", created {md(bench['created'])}" if bench.get(
            "created") else "") + (f" by `{public_text(str(bench['command'])).replace('`', chr(39))}`"
                                   if bench.get("command") else "") + ".")
    st.caption(f"{md(bench.get('dataset', '?'))} · {md(bench.get('backbone', '?'))} · {md(bench.get('seeds', '?'))} "
               f"seed(s) · {md(bench.get('num_test_images', '?'))} test images · forget classes, one at a time: "
               + (md(", ".join(map(name, classes)), 2000) or "none"))
    if stale := comparison.weights_mismatch(bench, view.model.checkpoint_manifest().files):
        st.warning(f"This benchmark was made for other weights ({md(', '.join(stale), 400)} differ from the loaded "
                   "checkpoint's): its results do not describe this model. Re-run `wfexplain benchmark`.")
    if names != list(view.model.class_names):
        st.warning(f"The benchmark's classes ({md(', '.join(names), 2000)}) differ from the loaded checkpoint's; "
                   "labels follow the benchmark.")

    # ------------------------------------------------------------ which forget class
    options = [MEAN, *classes]
    default = next((c for c in view.forget if c in classes), classes[0] if classes else MEAN)
    choice = st.selectbox(
        "Forget class", options, index=options.index(default),
        format_func=lambda c: f"all {len(classes)} classes (mean)" if c == MEAN else f"{c}: {name(c)}",
        help="One benchmarked forget class, or the mean over all of them. Default: the sidebar's forget set.")
    c = None if choice == MEAN else int(choice)
    table = comparison.comparison_table(bench, c)

    # ------------------------------------------------------------ the table
    st.subheader("Methods × metrics")
    shown = comparison.formatted_table(table)
    best = comparison.best_per_column(table)
    marked = {(comparison.method_label(m), comparison.column_header(k)) for k, ms in best.items() for m in ms}
    style = pd.DataFrame("", index=shown.index, columns=shown.columns)
    for row, col in marked:
        style.loc[row, col] = "background-color: rgba(44, 160, 44, 0.18); font-weight: bold"
    groups = layout.metric_groups(list(comparison.means(table).columns))
    for title, metrics in groups:  # a few columns per table: each fits the page, no horizontal scrolling
        cols = [comparison.column_header(k) for k in metrics]
        st.markdown(f"**{title}**")
        st.dataframe(shown[cols].style.apply(lambda _, cols=cols: style[cols], axis=None), width="stretch")
    st.caption(f"{comparison.BEST_MARK} best per column among the unlearning methods: the closest to Retrain (the "
               "time: the lowest); every tied method is marked \"(tie)\"; "
               "Original (no unlearning) and Retrain (the oracle) are references and take no part. "
               "– = not measured (e.g. no time for the original model).")
    d = st.columns(3)
    d[0].download_button("All numbers (.csv)", reports.benchmark_csv(bench), "benchmark.csv", "text/csv",
                         on_click="ignore", help="Every forget class, method and metric: mean, std, gap to Retrain.")
    d[1].download_button("Table (.tex)", reports.benchmark_table(bench, "tex"), "benchmark.tex", "text/x-tex",
                         on_click="ignore", help="The mean over the benchmarked classes, booktabs.")
    d[2].download_button("Table (.md)", reports.benchmark_table(bench, "md"), "benchmark.md", "text/markdown",
                         on_click="ignore")
    with st.expander("Gap to Retrain (method − Retrain; the closer to 0, the closer to the oracle)"):
        gap = comparison.gap_to_retrain(table).drop(index=[r for r in comparison.REFERENCES if r in table.index])
        gap = (gap * [100.0 if comparison.is_percent(k) else 1.0 for k in gap.columns]).rename(index=comparison.method_label)
        for title, metrics in groups:
            st.markdown(f"**{title}**")
            st.dataframe(gap[metrics].rename(columns=comparison.column_header).style.format("{:+.3g}", na_rep="–"),
                         width="stretch")

    # ------------------------------------------------------------ cost
    cost = bench.get("cost") or {}
    if cost:
        st.subheader("Cost")
        k = st.columns(3)
        k[0].metric(f"WF, all {len(names)} classes (↓)", _seconds(cost.get("wf_all_classes_seconds")),
                    help="One unlearning round learns every class's filter; forgetting any class or set afterwards "
                         "needs no training. " + md(cost.get("wf_seconds_source", ""), 1000))
        k[1].metric("Retrain, one class (↓)", _seconds(cost.get("retrain_one_class_seconds")),
                    help="Training from scratch without one class. " + md(cost.get("retrain_seconds_source", ""), 1000))
        ratio = comparison.as_float(cost.get("ratio"))
        k[2].metric("Ratio: WF all / Retrain one (↓)", "—" if math.isnan(ratio) else f"{ratio:.2f}×",
                    help="Below 1: WF forgets all classes for less than a single Retrain costs.")
        one = cost.get("one_class_seconds") or {}
        if one:
            order = comparison.order_methods(list(one))
            st.dataframe(pd.DataFrame({"time to forget one class (s) ↓": [comparison.as_float(one[m]) for m in order]},
                                      index=pd.Index([comparison.method_label(m) for m in order], name="method")
                                      ).style.format("{:,.1f}", na_rep="–"))
            st.caption("WF's one-class time includes its whole unlearning round (all classes) plus baking the filter.")

    # ------------------------------------------------------------ trade-off
    st.subheader("Trade-off")
    pts = comparison.tradeoff_points(table)
    original = None
    if "original" in table.index and "retain_accuracy_test" in table.columns.get_level_values("metric"):
        original = comparison.means(table).at["original", "retain_accuracy_test"]
    if pts[["forget_quality", "retain_accuracy"]].notna().all(axis=1).any():
        st.plotly_chart(figures.tradeoff_scatter(
            [comparison.method_label(m) for m in pts.index], pts["forget_quality"], pts["retain_accuracy"],
            pts["seconds"], [i for i, p in enumerate(pts["pareto"]) if p], original), key="compare_tradeoff")
        st.caption("Each method is a legend entry with its time (click one to hide it); a point is labelled where the "
                   "label has room, hover for the rest. Ringed points are Pareto-optimal: no other method has higher "
                   "forget quality, higher retain accuracy and lower time at once (methods without a time, drawn "
                   "open, are never on it). The dotted line is the original model's retain accuracy.")
    else:
        st.caption("No forget/retain accuracies to plot.")

    # ------------------------------------------------------------ per-class views
    entries = bench["per_class"][str(c)] if c is not None else {}
    _ab(entries, names, c, classes, bench.get("num_test_images"))
    if c is None:
        st.info("Pick a single forget class above for the chart of where its predictions go.")
        return
    st.subheader(f"Where class {md(name(c))}'s predictions go")
    preds = {comparison.method_label(m): entries[m]["forget_predictions"]
             for m in comparison.order_methods(list(entries)) if entries[m].get("forget_predictions")}
    if preds:
        ref = comparison.method_label("retrain")
        try:
            st.plotly_chart(figures.forget_predictions_heatmap(preds, names, c, ref if ref in preds else None,
                                                               comparison.prediction_distances(preds, ref)),
                            key="compare_predictions")
        except ValueError as e:
            st.error(f"Cannot draw the predictions: {md(e, 600)}")
        st.caption("Retrain sends the forgotten class's images to the classes they resemble; a method that matches "
                   "that row forgets like the oracle, one that piles them on a single class is easy to detect.")
    else:
        st.caption("No prediction distributions in this benchmark.")


def _ab(entries: dict, names: list[str], c: int | None, classes: list[int], num_test) -> None:
    """Per-class accuracy of two methods, both on the benchmark's test images or both on the live evaluation subset."""
    st.subheader("A/B: per-class accuracy")
    with_acc = [m for m in comparison.order_methods(list(entries)) if entries[m].get("per_class_accuracy")]
    sources = ([layout.BENCHMARK] if with_acc else []) + [layout.LIVE]
    live_names = list(view.model.class_names)
    forget = ", ".join(f"{k}: {md(live_names[k])}" for k in view.forget) or "none"  # radio labels are markdown
    n_test = "?" if math.isnan(comparison.as_float(num_test)) else f"{comparison.as_float(num_test):,.0f}"
    label = {layout.BENCHMARK: f"Benchmark: its {n_test} test images, forget class "
                                   f"{c}: {md(names[c]) if c is not None and 0 <= c < len(names) else c} (Retrain, the "
                                   "baselines)",
             layout.LIVE: f"Live: the dashboard's evaluation subset, the sidebar's forget set ({forget})"}
    src = st.radio("Images (A and B are always measured on the same ones)", sources, format_func=label.get,
                   index=sources.index(layout.ab_default_source(view.forget, c, bool(with_acc))),
                   key=f"compare_ab_source_{len(sources)}", help="The benchmark scored every method on its own test "
                   "images; the live view evaluates the loaded checkpoint on the dashboard's smaller evaluation subset. "
                   "Bars from the two would differ by the images, not only by the method, so one chart never mixes them.")
    if src == layout.BENCHMARK:
        choices = {m: (comparison.method_label(m), entries[m]["per_class_accuracy"]) for m in with_acc}
        defaults, forgotten, shown_names = ("wf", "retrain"), [c], names
        images = f"the benchmark's {n_test} test images"
    else:
        y = eval_data(view).targets.numpy()
        s = live_scores(y, predictions(view, ())[0], predictions(view, view.forget)[0], view.model.num_classes,
                        view.forget)
        choices = {"wf_live": ("WF, live (the sidebar's forget set)", s["per_class"]),
                   "original_live": ("Original (no unlearning), live", s["original_per_class"])}
        defaults, forgotten, shown_names = ("wf_live", "original_live"), list(view.forget), live_names
        images = f"the dashboard's {len(y):,} evaluation images"
        st.caption(layout.live_set_note(view.forget, classes, [md(n) for n in live_names])
                   + (f" This benchmark has no per-class accuracies for class {c}." if c is not None and not with_acc
                      else ""))
    keys = list(choices)
    left, right = st.columns(2)
    a = left.selectbox("Method A", keys, format_func=lambda m: choices[m][0], key=f"compare_a_{src}",
                       index=keys.index(defaults[0]) if defaults[0] in keys else 0)
    b = right.selectbox("Method B", keys, format_func=lambda m: choices[m][0], key=f"compare_b_{src}",
                        index=keys.index(defaults[1]) if defaults[1] in keys else min(1, len(keys) - 1))
    try:
        st.plotly_chart(figures.ab_accuracy_bars(choices[a][1], choices[b][1], shown_names, forgotten, choices[a][0],
                                                 choices[b][0], images), key="compare_ab")
    except ValueError as e:
        st.error(f"Cannot draw the per-class accuracies: {md(e, 600)}")
    st.caption(f"Both bars: {images}.")


def _glossary(bench: dict | None) -> None:
    with st.expander("Glossary: the metrics"):
        st.markdown("\n".join(f"- **{m.label}** {m.arrow} ({'higher' if m.higher_is_better else 'lower'} is better) "
                              f"— {m.formula}. *{m.reference}*" for m in METRICS.values())
                    + "\n- **Forget quality** ↑ (trade-off plot) — 1 − forget acc. (test).")
    if bench and bench.get("config"):
        with st.expander("Hyperparameters of each method"):
            st.json(bench["config"], expanded=1)


# ---------------------------------------------------------------- the results shown
_collect()
bench = None
result = st.session_state.get(RESULT)
from_session = result is not None and result["path"] == view.path
if from_session:
    bench = result["bench"]
else:
    try:
        bench = comparison.read_benchmark(view.path)
    except FileNotFoundError:
        st.info(f"No benchmark for this checkpoint yet (`{view.name}/benchmark.json` does not exist). "
                f"Create it with `wfexplain benchmark --checkpoint {view.name}`, or run a quick one-class benchmark "
                "below.")
    except ValueError as e:
        st.error(f"Cannot read the benchmark: {md(public_text(str(e)), 600)}")
if bench is not None:
    try:
        _show(bench, from_session)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        where = "the benchmark run" if from_session else f"`{view.name}/benchmark.json`"
        st.error(f"{where} does not match the expected schema: {type(e).__name__}: {md(e, 600)}")
_glossary(bench)

# ---------------------------------------------------------------- run one
st.header("Run a benchmark for the current forget set")
busy = running(JOB)
names = list(view.model.class_names)
candidates = list(view.forget) or list(range(len(names)))
st.write("Trains the Retrain oracle from scratch (or reuses a stored one), runs every baseline for one seed, takes WF "
         "from the checkpoint's memory matrices (no training per class; its round time from the manifest) and scores "
         "them all: minutes on a CPU. Nothing is written to benchmark.json; the result replaces the file's on "
         f"this page until you clear it. For several seeds or all classes use `wfexplain benchmark --checkpoint {view.name}`.")
if not view.forget:
    st.caption("No forget set in the sidebar: choose any class here.")
target = st.selectbox("Forget class to benchmark", candidates, format_func=lambda i: f"{i}: {names[i]}", disabled=busy)
if st.button("Run benchmark", type="primary", disabled=busy, key="compare_run"):
    path, cls = view.path, int(target)

    def run(progress, stop) -> dict:
        from wfexplain.benchmark.runner import BenchmarkConfig, run_benchmark

        # The checkpoint's own memory (no WF rerun) and nothing written, shipped directories included.
        bench = run_benchmark(path, BenchmarkConfig(forget_classes=(cls,), seeds=1, wf_round="checkpoint", out=None,
                                                    save_oracles=False, resume=False), progress, stop)
        if bench is None:  # cancelled
            return {"cancelled": True}
        comparison.check_benchmark(bench, "the benchmark run")
        return {"bench": bench, "path": path, "cancelled": False}

    recipe = view.model.checkpoint_manifest()
    try:  # the Retrain oracle is a full training of the checkpoint's recipe: within this server's limits
        job_caps().check(epochs=(recipe.train_config or {}).get("epochs"), train_images=recipe.train_images)
    except ValueError as e:
        st.error(f"Cannot start: {e}")
    else:
        if start_job(JOB, Job(run, f"benchmark of class {md(names[cls])}")):  # the label is shown as markdown
            st.rerun()


job_panel(JOB, lambda job, s: f"{job.label}: done in {s.finished - s.started:.0f} s, shown above.",
          failure="The benchmark failed", cancelled="Cancelled: no result kept.")
