"""The Compare page's sections (views/compare.py draws them): the protocol banners, the cost at parity, the tuning,
the deletion curves of WF's memories, the A/B view and where a forgotten class's predictions go. Pure logic is in
wfexplain.benchmark.layout."""

import math

import streamlit as st

from wfexplain import figures
from wfexplain.benchmark import comparison, layout
from wfexplain_dashboard.resources import View, eval_data, predictions
from wfexplain_dashboard.scoring import live_scores
from wfexplain_dashboard.text import escape_markdown

RUN_BELOW = "the command under “Run a benchmark” below"


def md(value, limit: int = 100) -> str:
    """Data (a class name, a benchmark.json field) escaped for a line of markdown: nothing in it links or formats."""
    return escape_markdown(str(value), limit)


def banners(bench: dict) -> None:
    """Say when the numbers cannot be read as a fair comparison: an older protocol, no tuning, or tuning on images
    the backbone trained on."""
    if bench.get("protocol"):
        st.warning(f"Protocol: {md(bench['protocol'], 300)}. The methods of this benchmark were not tuned on a "
                   "validation split with the same budget, and it lacks most of the current metrics: its numbers are "
                   f"not comparable with a benchmark made now. Re-run it with {RUN_BELOW}.")
    selection = bench.get("selection")
    if not isinstance(selection, dict):
        return
    if not selection.get("tuned"):
        st.warning("Untuned: every method ran with its default hyperparameters (`--no-tune`), so a method may look "
                   "worse than it would with the same tuning budget as the others. Compare tuned benchmarks.")
    elif (selection.get("validation") or {}).get("seen_by_backbone"):
        st.warning("The validation images the hyperparameters were chosen on were seen by the backbone in training "
                   "(the checkpoint holds no validation split of its own): the choice may favour methods that "
                   "leave training images as they were. Train with `--val-fraction 0.1` for a held-out split.")


def cost(bench: dict) -> None:
    """The seconds each method needs to answer the same forget requests, WF's one round included, and the tuning's."""
    cost = bench.get("cost") or {}
    parity = cost.get("parity") or {}
    if not parity.get("totals"):
        one = cost.get("one_request_seconds") or cost.get("one_class_seconds") or {}
        if one:  # an older benchmark: one request's time only
            st.subheader("Cost")
            st.dataframe(layout.parity_table({"parity": {"totals": one}, "one_request_seconds": one})[
                ["one request, 1 class (s)"]].style.format("{:,.1f}", na_rep="–"))
            st.caption("This benchmark predates the cost at parity: the time to forget one class.")
        return
    requests = parity.get("requests", {})
    asked = ", ".join(f"{k} of {s} class{'es' if s != '1' else ''}" for s, k in requests.items())
    st.subheader(f"Cost at parity: {md(sum(map(int, requests.values())))} forget requests")
    parts = layout.parity_parts(parity)
    st.bar_chart(parts, horizontal=True, stack=True, sort=False, color=["#ff7f0e", "#1f77b4", "#c7c7c7"],
                 y_label="seconds", x_label="")
    rnd = comparison.as_float(parity.get("wf_round_seconds"))
    st.caption(f"Seconds to answer {md(asked, 300)} (↓). WF and WF + removal pay one round for every class once "
               f"(orange, {'—' if math.isnan(rnd) else f'{rnd:,.1f} s'}), then per request only what follows it "
               "(baking, removal); the others pay each request in full. Grey: request sizes not benchmarked, timed as "
               "the single-class requests (extrapolated).")
    table = layout.parity_table(cost)
    st.dataframe(table.style.format({c: "{:,.1f}" for c in table.columns if c.endswith("(s)") or c.endswith("↓")},
                                    na_rep="–"))
    notes = [md(cost[k], 400) for k in ("wf_seconds_source", "retrain_seconds_source") if cost.get(k)]
    st.caption("Tuning (s): the time each method's grid took on the validation split (Retrain is not tuned). "
               + (f"Timings: WF {notes[0]}" + (f"; Retrain {notes[1]}" if len(notes) > 1 else "") + "." if notes else ""))


def tuning(bench: dict, set_name) -> None:
    """The tuning's rule, budget and grids, and the values it chose per method and forget set."""
    tuning = bench.get("tuning")
    with st.expander("Tuning (validation split only)"):
        if not isinstance(tuning, dict):
            st.caption("This benchmark was not tuned: every method ran with its defaults.")
            return
        st.markdown(f"**Rule.** {md(tuning.get('rule', '?'), 2000)}")
        val = (bench.get("selection") or {}).get("validation") or {}
        st.caption(f"Seed {md(tuning.get('seed', '?'))}, {md(tuning.get('validation_images', '?'))} validation images"
                   + (f" (split seed {md(val.get('seed', '?'))}, SHA-256 {md(val.get('sha256', '?'))})" if val else "")
                   + "; the test split is read only after every choice.")
        st.markdown("**Budget and grid per method** (the same number of points for every method)")
        st.dataframe(layout.grid_table(tuning).style.format({"tuning (s)": "{:,.1f}"}, na_rep="–"))
        st.markdown("**Chosen per forget set** (the point closest to Retrain on the validation images)")
        chosen = layout.chosen_table(tuning, set_name)
        st.dataframe(chosen.style.format({c: "{:.3f}" for c in chosen.columns[3:]}, na_rep="–"), hide_index=True)


def ab(view: View, entries: dict, names: list[str], key: str | None, set_keys: list[str], num_test) -> None:
    """Per-class accuracy of two methods, both on the benchmark's test images or both on the live evaluation subset."""
    st.subheader("A/B: per-class accuracy")
    with_acc = [m for m in comparison.order_methods(list(entries)) if entries[m].get("per_class_accuracy")]
    sources = ([layout.BENCHMARK] if with_acc else []) + [layout.LIVE]
    live_names = list(view.model.class_names)
    forget = ", ".join(f"{k}: {md(live_names[k])}" for k in view.forget) or "none"  # radio labels are markdown
    n_test = "?" if math.isnan(comparison.as_float(num_test)) else f"{comparison.as_float(num_test):,.0f}"
    chosen = layout.set_classes(key) if key is not None else ()
    label = {layout.BENCHMARK: f"Benchmark: its {n_test} test images, forget set "
                               f"{md(layout.set_name(key, names), 300) if key is not None else '?'} (Retrain, the "
                               "baselines)",
             layout.LIVE: f"Live: the dashboard's evaluation subset, the sidebar's forget set ({forget})"}
    src = st.radio("Images (A and B are always measured on the same ones)", sources, format_func=label.get,
                   index=sources.index(layout.ab_default_source(view.forget, chosen or None, bool(with_acc))),
                   key=f"compare_ab_source_{len(sources)}", help="The benchmark scored every method on its own test "
                   "images; the live view evaluates the loaded checkpoint on the dashboard's smaller evaluation subset. "
                   "Bars from the two would differ by the images, not only by the method, so one chart never mixes them.")
    if src == layout.BENCHMARK:
        choices = {m: (comparison.method_label(m), entries[m]["per_class_accuracy"]) for m in with_acc}
        defaults, forgotten, shown_names = ("wf", "retrain"), list(chosen), names
        images = f"the benchmark's {n_test} test images"
    else:
        y = eval_data(view).targets.numpy()
        s = live_scores(y, predictions(view, ())[0], predictions(view, view.forget)[0], view.model.num_classes,
                        view.forget)
        choices = {"wf_live": ("WF, live (the sidebar's forget set)", s["per_class"]),
                   "original_live": ("Original (no unlearning), live", s["original_per_class"])}
        defaults, forgotten, shown_names = ("wf_live", "original_live"), list(view.forget), live_names
        images = f"the dashboard's {len(y):,} evaluation images"
        st.caption(layout.live_set_note(view.forget, set_keys, [md(n) for n in live_names])
                   + (" This benchmark has no per-class accuracies for that set." if key is not None and not with_acc
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


def where_predictions_go(entries: dict, names: list[str], key: str) -> None:
    """Each method's predictions on the test images of the forget set's first class, against Retrain's."""
    c = layout.set_classes(key)[0]
    several = len(layout.set_classes(key)) > 1
    st.subheader(f"Where class {md(layout.class_name(c, names))}'s predictions go"
                 + (f" (the first class of {md(layout.set_name(key, names), 300)})" if several else ""))
    preds = {comparison.method_label(m): entries[m]["forget_predictions"]
             for m in comparison.order_methods(list(entries)) if entries[m].get("forget_predictions")}
    if not preds:
        st.caption("No prediction distributions in this benchmark.")
        return
    ref = comparison.method_label("retrain")
    try:
        st.plotly_chart(figures.forget_predictions_heatmap(preds, names, c, ref if ref in preds else None,
                                                           comparison.prediction_distances(preds, ref)),
                        key="compare_predictions")
    except ValueError as e:
        st.error(f"Cannot draw the predictions: {md(e, 600)}")
    st.caption("Retrain sends the forgotten class's images to the classes they resemble; a method that matches "
               "that row forgets like the oracle, one that piles them on a single class is easy to detect.")


def explanations(bench: dict, key: str | None, set_name) -> None:
    """Do WF's memories explain? The deletion curves' AUCs for the chosen forget set (or the means over the single
    classes), measured with the benchmark (docs/method.md, *Do the memories explain?*)."""
    expl = bench.get("explanations")
    with st.expander("Do WF's memories explain? (deletion curves)"):
        if not isinstance(expl, dict):
            st.caption("This benchmark has no deletion curves (made before they were measured, or with "
                       "`--no-explanations`).")
            return
        entry = (expl.get("classes") or {}).get(key) or (expl.get("sets") or {}).get(key) if key else None
        what = f"forget set {md(set_name(key), 200)}" if entry else "the mean over the benchmarked single classes"
        aucs = figures.deletion_aucs(entry or expl.get("summary") or {})
        if not aucs:
            st.caption("No deletion curves for this choice.")
            return
        st.caption(f"For {what}: every layer's top {', '.join(f'{f:.0%}' for f in expl.get('fractions', []))} "
                   "components switched off, ranked by WF's memory, by activation selectivity, by gradient × "
                   f"activation or at random, on the benchmark's {md(expl.get('num_images', '?'))} test images "
                   f"(rankings from {md(expl.get('num_train_images', '?'))} training images; seed 0's WF round). "
                   "Selectivity = the forgotten classes' accuracy drop − the others' (AUC over the fractions).")
        st.dataframe(figures.deletion_table(aucs), hide_index=True)
        st.markdown(md(figures.deletion_verdict(aucs), 600))
