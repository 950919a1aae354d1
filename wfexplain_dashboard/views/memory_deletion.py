"""The Memory page's section "Do these memories explain?": deletion curves (wfexplain.explain.deletion) of the sidebar's
forget set or of one class, measured on demand and cached, and the summary `wfexplain explanations --record` stored in
the manifest. The numbers, the table and the sentence come from wfexplain.figures.deletion."""

import pandas as pd
import streamlit as st

from wfexplain import figures
from wfexplain.spreadsheet import csv_safe
from wfexplain_dashboard.resources import (
    DELETION,
    View,
    deletion_figure_files,
    deletion_report,
    eval_data,
    training_images,
)
from wfexplain_dashboard.text import escape_markdown, public_text

DEFAULT_TEST, DEFAULT_TRAIN, MAX_IMAGES = 1000, 2000, 10_000
SHOWN = "_deletion_shown"  # session state: the measurements this session asked for (shown again from the cache)


def _table(aucs: dict) -> pd.DataFrame:
    return pd.DataFrame(figures.deletion_table(aucs))


def _limit(col, label: str, n: int, default: int, help: str) -> int:
    """A slider of how many images to use (all of them, without a slider, when there are at most 100)."""
    if n <= 100:
        col.caption(f"{label}: all {n:,}")
        return n
    top = min(n, MAX_IMAGES)
    return int(col.slider(label, 100, top, min(default, top), step=100 if top >= 1000 else 10, help=help))


def _recorded(view: View, members: tuple[int, ...]) -> None:
    """The summary `wfexplain explanations --record` stored (no curves: AUCs only), and this target's row if there."""
    rec = (getattr(view.model.manifest, "metrics", None) or {}).get("explanations")
    if not rec:
        return
    try:
        summary, draws = rec["summary"], int(rec["config"]["draws"])
        key = str(members[0]) if len(members) == 1 else "-".join(map(str, members))
        row = ((rec.get("classes") if len(members) == 1 else rec.get("sets")) or {}).get(key)
        st.markdown(f"**Recorded** by `wfexplain explanations --record`: {int(rec['num_images']):,} test images, "
                    f"rankings from {int(rec['num_train_images']):,} training images, {draws} random draws. Memory "
                    f"beats random for {int(summary['memory_beats_random'])} of {len(rec['classes'])} classes; "
                    "mean over them:")
        st.dataframe(_table(figures.deletion_aucs(summary)), hide_index=True)
        st.markdown("Over the recorded classes: " + figures.deletion_verdict(figures.deletion_aucs(summary), draws))
        if row is not None:
            st.markdown("Recorded for this " + ("class" if len(members) == 1 else "set") + ": "
                        + figures.deletion_verdict(figures.deletion_aucs(row), draws))
            st.dataframe(_table(figures.deletion_aucs(row)), hide_index=True)
    except (KeyError, TypeError, ValueError, AttributeError):
        st.caption("This checkpoint's manifest holds a recorded summary (`metrics.explanations`) that cannot be read.")


def _show(view: View, report: dict, members: tuple[int, ...], what: str) -> None:
    names = view.model.class_names
    key = "-".join(map(str, members))
    entry = report["classes"][key] if len(members) == 1 else report["sets"][key]
    aucs = figures.deletion_aucs(entry)
    files = deletion_figure_files(entry, tuple(report["fractions"]), " + ".join(names[c] for c in members))
    st.image(files["preview"])
    st.markdown(f"**{what}**: {figures.deletion_verdict(aucs, report['config']['draws'])}")
    table = _table(aucs)
    st.dataframe(table, hide_index=True)
    st.caption(f"Measured in {report['seconds']:.1f} s: accuracies on {report['num_images']:,} test images (original "
               f"accuracy {report['original_accuracy']:.1%}), rankings from {report['num_train_images']:,} training "
               f"images, {report['config']['draws']} random draws (± one standard deviation over them).")
    stem = f"{view.name.replace('/', '_')}-deletion-{key}"
    cols = st.columns(len(figures.FIGURE_FORMATS) + 1)
    for col, fmt in zip(cols, figures.FIGURE_FORMATS, strict=False):
        col.download_button(f"Curves .{fmt}", files[fmt], f"{stem}.{fmt}", mime=figures.FIGURE_MIME[fmt],
                            key=f"deletion_{fmt}", on_click="ignore")
    csv = csv_safe(table.assign(target=" + ".join(names[c] for c in members))).to_csv(index=False).encode("utf-8")
    cols[-1].download_button("Table .csv", csv, f"{stem}.csv", "text/csv", key="deletion_csv", on_click="ignore")


def section(view: View) -> None:
    """The section, for the sidebar's forget set or (without one) a class chosen here."""
    names = list(view.model.class_names)
    st.subheader("Do these memories explain? (deletion curves)")
    shares = ", ".join(f"{f:.0%}" for f in DELETION.fractions[:-1]) + f" and {DELETION.fractions[-1]:.0%}"
    st.caption(f"Switch off the top {shares} of every layer's components, ranked by the filter's memory, by "
               f"the class selectivity of their activations, by gradient × activation, or at random ({DELETION.draws} "
               "draws), and measure the "
               "accuracy lost on the class (or the set's classes) and on the others. Selectivity = class drop − "
               "others' drop, each averaged over the fractions (AUC): higher means the ranking found what the class "
               "needs and little else (docs/method.md, *Do the memories explain?*).")
    if view.forget:
        members = tuple(sorted(view.forget))
    else:
        members = (int(st.selectbox("Class to measure", range(len(names)), format_func=lambda i: names[i],
                                    help="Choose classes to forget in the sidebar to measure that set instead")),)
    what = " + ".join(escape_markdown(names[c], 60) for c in members)
    _recorded(view, members)
    if len(members) >= len(names):
        st.info("The forget set keeps no class: there are no other classes to compare with.")
        return
    n_train, why = training_images(view)
    if why is not None:
        st.warning(f"The training images of `{escape_markdown(view.name, 80)}` cannot be read ({escape_markdown(why, 300)})"
                   ": the activation and gradient rankings are computed on them, so deletion curves cannot be measured "
                   "here (an imported model's training data may not be on this server).")
        return
    a, b = st.columns(2)
    test_limit = _limit(a, "Test images (accuracies)", len(eval_data(view).dataset), DEFAULT_TEST,
                        "A seeded, class-stratified subset of the test split: the accuracies are measured on it")
    train_limit = _limit(b, "Training images (rankings)", n_train, DEFAULT_TRAIN,
                         "A seeded, class-stratified subset the activation and gradient rankings are computed on")
    key = (view.path, view.data, members, test_limit, train_limit)
    shown = st.session_state.setdefault(SHOWN, set())
    if st.button("Measure", icon=":material/monitoring:", help="Seconds to a minute; the result is kept for this "
                 "checkpoint, set and image counts, so coming back shows it at once"):
        shown.add(key)
    if key not in shown:
        st.caption(f"Press **Measure** to draw the deletion curves of {what}.")
        return
    slot = st.empty()

    def progress(done: int, total: int, step: str) -> None:
        slot.progress(min(1.0, done / max(total, 1)), text=f"Measuring deletion curves ({done} of {total}): "
                                                           f"{escape_markdown(step, 80)}")

    try:
        report = deletion_report(view, members, test_limit, train_limit, progress)
    except (OSError, ValueError) as e:
        slot.empty()
        shown.discard(key)
        st.error(f"Deletion curves of {what} cannot be measured: {escape_markdown(public_text(str(e)), 300)}")
        return
    slot.empty()
    _show(view, report, members, what)
