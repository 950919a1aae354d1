"""Compare: WF against the Retrain oracle and the baselines, from the checkpoint's benchmark.json."""

import pandas as pd
import streamlit as st

from wfexplain import figures, suggested
from wfexplain.benchmark import comparison, layout, reports
from wfexplain.benchmark.catalogue import METRICS
from wfexplain_dashboard.job_panel import job_panel, running, start_job
from wfexplain_dashboard.jobs import Job
from wfexplain_dashboard.resources import current
from wfexplain_dashboard.settings import job_caps
from wfexplain_dashboard.text import public_text
from wfexplain_dashboard.views import compare_parts as parts
from wfexplain_dashboard.views.compare_parts import md

JOB, RESULT, COLLECTED = "compare_job", "compare_result", "compare_collected"

view = current()
manifest = view.model.checkpoint_manifest()
COMMAND = suggested.benchmark(view.path, view.model.num_classes, tune=bool(manifest.validation))
st.title("Compare")
st.caption("Weight filtering (WF) against the Retrain oracle (trained from scratch without the forget set) and the "
           "baseline unlearning methods, each tuned on the validation split with the same budget, on every metric of "
           "`wfexplain benchmark`. Cells are mean ± std over seeds; [brackets] = gap to Retrain (percentage points "
           "for accuracies); ↑/↓ = the direction the literature reads a metric in.")


def _collect() -> None:
    """Keep a finished run's result in the session (once per job)."""
    job: Job | None = st.session_state.get(JOB)
    if job is None or st.session_state.get(COLLECTED) is job:
        return
    s = job.state()
    if s.done and not s.error and not s.cancelled and s.result and s.result.get("bench"):
        st.session_state[RESULT] = {"path": s.result["path"], "bench": s.result["bench"]}
        st.session_state[COLLECTED] = job


def _show(bench: dict, from_session: bool) -> None:
    names = [str(n) for n in bench["class_names"]]
    set_keys = comparison.benchmarked_sets(bench)
    if from_session:
        st.success("Showing the benchmark run in this session (not saved to benchmark.json).")
        if st.button("Show the saved benchmark.json instead", key="compare_drop_result"):
            del st.session_state[RESULT]
            st.rerun()
    else:
        st.caption(f"From `{view.name}/benchmark.json`" + (f", created {md(bench['created'])}" if bench.get(
            "created") else "") + (f" by `{public_text(str(bench['command'])).replace('`', chr(39))}`"
                                   if bench.get("command") else "") + ".")
    sizes = [len(layout.set_classes(k)) for k in set_keys]
    singles = ", ".join(layout.class_name(int(k), names) for k in set_keys if k.isdigit())
    st.caption(f"{md(bench.get('dataset', '?'))} · {md(bench.get('backbone', '?'))} · {md(bench.get('seeds', '?'))} "
               f"seed(s) · {md(bench.get('num_test_images', '?'))} test images · forget sets: {sizes.count(1)} single "
               f"class(es) ({md(singles, 2000) or 'none'}), {sizes.count(2)} pair(s), {sizes.count(3)} triple(s)")
    if stale := comparison.weights_mismatch(bench, manifest.files):
        st.warning(f"This benchmark was made for other weights ({md(', '.join(stale), 400)} differ from the loaded "
                   f"checkpoint's): its results do not describe this model. Re-run it with {parts.RUN_BELOW}.")
    if names != list(view.model.class_names):
        st.warning(f"The benchmark's classes ({md(', '.join(names), 2000)}) differ from the loaded checkpoint's; "
                   "labels follow the benchmark.")
    parts.banners(bench)

    # ------------------------------------------------------------ what the tables show
    options = layout.table_choices(bench, set_keys)
    choice = st.selectbox(
        "Forget set", options, index=options.index(layout.default_choice(view.forget, options)),
        format_func=lambda k: layout.choice_label(k, set_keys, names),
        help="The mean over the benchmarked sets of one size, or one forget set (its results over seeds). Default: "
             "the sidebar's forget set when it was benchmarked.")
    forget, size = layout.table_args(choice)
    table = comparison.comparison_table(bench, forget, size)

    # ------------------------------------------------------------ the tables
    st.subheader("Methods × metrics")
    shown = comparison.formatted_table(table)
    best = comparison.best_per_column(table)
    marked = {(comparison.method_label(m), comparison.column_header(k)) for k, ms in best.items() for m in ms}
    style = pd.DataFrame("", index=shown.index, columns=shown.columns)
    for row, col in marked:
        style.loc[row, col] = "background-color: rgba(44, 160, 44, 0.18); font-weight: bold"
    groups = layout.metric_groups(layout.measured_metrics(table))
    for title, metrics in groups:  # a few columns per table: each fits the page, no horizontal scrolling
        cols = [comparison.column_header(k) for k in metrics]
        st.markdown(f"**{title}**")
        st.dataframe(shown[cols].style.apply(lambda _, cols=cols: style[cols], axis=None), width="stretch")
    st.caption(f"{comparison.BEST_MARK} best per column among the unlearning methods: the closest to Retrain (the "
               "time: the lowest); every tied method is marked \"(tie)\"; "
               "Original (no unlearning) and Retrain (the oracle) are references and take no part. "
               "– = not measured (e.g. no time for the original model); metrics measured for no method are left out.")
    by_size = str(size or (len(layout.set_classes(forget)) if forget else 1))
    by_size = by_size if by_size == "1" or by_size in (bench.get("by_size") or {}) else "1"
    what = layout.SIZE_NAMES.get(int(by_size), f"sets of {by_size}")
    d = st.columns(3)
    d[0].download_button("All numbers (.csv)", reports.benchmark_csv(bench), "benchmark.csv", "text/csv",
                         on_click="ignore", help="Every forget set (and size), method and metric: mean, std, gap to "
                                                 "Retrain.")
    d[1].download_button(f"Table of {what} (.tex)", reports.benchmark_table(bench, "tex", by_size),
                         f"benchmark-{by_size}.tex", "text/x-tex", on_click="ignore",
                         help=f"The mean over the benchmarked {what}, booktabs.")
    d[2].download_button(f"Table of {what} (.md)", reports.benchmark_table(bench, "md", by_size),
                         f"benchmark-{by_size}.md", "text/markdown", on_click="ignore")
    with st.expander("Gap to Retrain (method − Retrain; the closer to 0, the closer to the oracle)"):
        gap = comparison.gap_to_retrain(table).drop(index=[r for r in comparison.REFERENCES if r in table.index])
        gap = (gap * [100.0 if comparison.is_percent(k) else 1.0 for k in gap.columns]).rename(index=comparison.method_label)
        for title, metrics in groups:
            st.markdown(f"**{title}**")
            st.dataframe(gap[metrics].rename(columns=comparison.column_header).style.format("{:+.3g}", na_rep="–"),
                         width="stretch")

    parts.cost(bench)

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

    parts.tuning(bench, lambda k: layout.set_name(k, names))
    parts.explanations(bench, forget, lambda k: layout.set_name(k, names))

    # ------------------------------------------------------------ one forget set's views
    entries = bench["per_set"][forget] if forget is not None else {}
    parts.ab(view, entries, names, forget, set_keys, bench.get("num_test_images"))
    if forget is None:
        st.info("Pick one forget set above for the chart of where its predictions go.")
        return
    parts.where_predictions_go(entries, names, forget)


def _glossary(bench: dict | None) -> None:
    with st.expander("Glossary: the metrics"):
        st.markdown("\n".join(f"- **{m.label}** {m.arrow} ({m.family}; best: "
                              f"{'closest to Retrain' if m.versus_retrain else 'highest' if m.higher_is_better else 'lowest'}) — "
                              f"{m.formula}. "
                              f"*{m.reference}*" for m in METRICS.values())
                    + "\n- **Forget quality** ↑ (trade-off plot) — 1 − forget acc. (test).")
    if bench and bench.get("config"):
        with st.expander("Hyperparameters of each method (per forget set)"):
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
        st.info(f"No benchmark for this checkpoint yet (`{view.name}/benchmark.json` does not exist). Create it with "
                f"{parts.RUN_BELOW}, or run a quick one-class benchmark there.")
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
st.header("Run a benchmark")
st.write("The full benchmark (every class alone, seeded pairs and triples, three seeds, every method tuned on the "
         "validation split with the same budget) runs from a shell on the server, into this checkpoint's "
         "benchmark.json:")
st.code(COMMAND, language="bash")
if not manifest.validation:
    st.caption("This checkpoint records no validation split to tune on, hence `--no-tune` (every method at its "
               "defaults); train with `--val-fraction 0.1` for a tuned benchmark.")
if not manifest.unlearned:
    st.caption("This checkpoint has no memory matrices yet: WF needs `wfexplain unlearn` on it first.")
busy = running(JOB)
names = list(view.model.class_names)
candidates = list(view.forget) or list(range(len(names)))
st.write("Or a quick one here, for one class: trains the Retrain oracle from scratch, runs every baseline once with "
         "its default hyperparameters (untuned), takes WF from the checkpoint's memory matrices (its round time from "
         "the manifest) and scores them all: minutes on a CPU. Nothing is written to benchmark.json; the result "
         "replaces the file's on this page until you clear it.")
if not view.forget:
    st.caption("No forget set in the sidebar: choose any class here.")
target = st.selectbox("Forget class to benchmark", candidates, format_func=lambda i: layout.class_name(i, names),
                      disabled=busy)
if st.button("Run benchmark", type="primary", disabled=busy, key="compare_run"):
    path, cls = view.path, int(target)

    def run(progress, stop) -> dict:
        from wfexplain.benchmark.runner import BenchmarkConfig, run_benchmark

        # The checkpoint's own memory (no WF rerun), no tuning, and nothing written, shipped directories included.
        bench = run_benchmark(path, BenchmarkConfig(forget_classes=(cls,), seeds=1, tune=False, wf_round="checkpoint",
                                                    out=None, save_oracles=False, resume=False), progress, stop)
        if bench is None:  # cancelled
            return {"cancelled": True}
        comparison.check_benchmark(bench, "the benchmark run")
        return {"bench": bench, "path": path, "cancelled": False}

    try:  # the Retrain oracle is a full training of the checkpoint's recipe: within this server's limits
        job_caps().check(epochs=(manifest.train_config or {}).get("epochs"), train_images=manifest.train_images)
    except ValueError as e:
        st.error(f"Cannot start: {e}")
    else:
        if start_job(JOB, Job(run, f"benchmark of class {md(names[cls])}")):  # the label is shown as markdown
            st.rerun()


job_panel(JOB, lambda job, s: f"{job.label}: done in {s.finished - s.started:.0f} s, shown above.",
          failure="The benchmark failed", cancelled="Cancelled: no result kept.")
