"""Forget (live): what changes when the sidebar's forget set is filtered out."""

import time

import numpy as np
import streamlit as st

from wfexplain import figures, suggested
from wfexplain.evaluation import quality
from wfexplain_dashboard.resources import PRECOMPUTE, current, eval_data, live_answers, predictions
from wfexplain_dashboard.scoring import live_scores
from wfexplain_dashboard.settings import data_path
from wfexplain_dashboard.sidebar import page_at
from wfexplain_dashboard.text import escape_markdown, public_text

ESTIMATE_ABOVE_S = 0.3  # a set that took longer than this to evaluate is first shown as an estimate

view = current()
model, forget = view.model, view.forget
names = list(model.class_names)
st.title("Forget")
st.page_link(page_at("about"), label="New here? What weight filtering is, and a first walk through the pages",
             icon=":material/info:")

started = st.session_state.get("_run_started", time.perf_counter())  # app.py: when this run began (the click)
manifest = model.checkpoint_manifest()
if forget and not quality.memory_trained(manifest):
    st.warning("This checkpoint's memory matrices were never trained (no `wfexplain unlearn` round): the forget set is "
               "applied, but its filters are untrained, so what changes below is not forgetting. Run "
               f"`{suggested.command('unlearn', view.path)}` first.")
data = eval_data(view)
answers = live_answers(view)
pending = st.empty()  # the moment a set changes: what the page is doing, until its numbers are drawn
if forget and not answers.has(forget):
    pending.info(f"Computing the filtered model for {escape_markdown(', '.join(view.forget_names), 300)}…",
                 icon=":material/hourglass_top:")
orig_all, _ = predictions(view, ())
total = len(data.targets)
if not forget:
    st.info("Choose classes to forget in the sidebar (**Forget classes**): any subset is applied live, as the product "
            "of their filters, and this page says how well sets of that size were trained and measured. Until then "
            "it shows the original model.")


PAIRS = answers.total > model.num_classes + 1  # pairs are precomputed only up to 20 classes


@st.fragment(run_every=2.0 if PRECOMPUTE and answers.done < answers.total and not answers.error else None)
def precompute_status() -> None:
    note = escape_markdown(public_text(answers.note), 600)  # no server path (a key file's) on the page
    note = note[:1].upper() + note[1:] + "." if note else ""
    if answers.error:  # the background run stopped (its note says where and why): never "15 of 56 done" forever
        st.warning(note)
    elif answers.done < answers.total and PRECOMPUTE:
        st.caption(f"Evaluating every single class{' and pair' * PAIRS} in the background: {answers.done} of "
                   f"{answers.total} done; those sets are then instant.")
    elif answers.done < answers.total:
        st.caption("Each forget set is evaluated when first chosen, then kept (this server does not precompute "
                   "them: WFEXPLAIN_PRECOMPUTE=0).")
    else:
        st.caption(f"All {answers.total - 1} single classes{' and pairs' * PAIRS} are precomputed (instant); other "
                   "sets are evaluated when first chosen.")
    if answers.rejected:
        st.warning(f"Ignored {answers.rejected} precomputed answers file{'s' * (answers.rejected > 1)} that failed "
                   "its integrity check (tampered, damaged or signed elsewhere): those answers are recomputed, "
                   "never shown.")
    if note and not answers.error:
        st.caption(note)


precompute_status()


def draw(rows: np.ndarray | None, filt_pred: np.ndarray, filt_conf: np.ndarray, phase: str) -> None:
    """The page's numbers and charts on the evaluation images ``rows`` (None: all of them)."""
    y = data.targets.numpy() if rows is None else data.targets.numpy()[rows]
    orig_pred = orig_all if rows is None else orig_all[rows]
    indices = data.indices.numpy() if rows is None else data.indices.numpy()[rows]
    scores = live_scores(y, orig_pred, filt_pred, model.num_classes, forget)
    c = st.columns([3, 3, 2, 2])  # room for the metric labels with their direction
    fa, fa0, ra, ra0 = scores["forget"], scores["original_forget"], scores["retain"], scores["original_retain"]
    c[0].metric("Forget accuracy (↓ lower is better)", "—" if not forget or np.isnan(fa) else f"{fa:.1%}",
                None if not forget or np.isnan(fa) else f"{quality.points(fa - fa0)} vs original", delta_color="inverse",
                help="Accuracy on test images of the forgotten classes, with their filter on. Retraining without "
                     "them gives ~0.")
    c[1].metric("Retain accuracy (↑ higher is better)", "—" if np.isnan(ra) else f"{ra:.1%}",
                None if np.isnan(ra) else f"{quality.points(ra - ra0)} vs original",
                help="Accuracy on test images of all other classes, with the filter on; compared with the original "
                     "model on the same images.")
    c[2].metric(f"Test images (of {len(data.dataset):,})", f"{len(y):,}",  # the value fits its column
                help="Every number on this page is on these images: a seeded, class-stratified subset of the test "
                     "split (the sidebar's test accuracy is the full split's, recorded when the model was trained)"
                     + ("; an estimate on a stratified part of them while all are computed" if rows is not None else ""))
    if phase == "all":
        st.caption(arithmetic())
    waited = c[3].empty()  # filled last: the time until everything below is on the page
    if phase == "estimate":
        st.info(f"**Estimate** on {len(y):,} of {total:,} test images (stratified by class); refining to all of them…")
    if forget:
        verdicts(fa, ra, ra0, y, filt_pred)
    st.plotly_chart(figures.accuracy_bars(scores["original_per_class"], scores["per_class"], names, forget),
                    key=f"bars_{phase}")
    left, right = st.columns(2)
    with left:
        st.subheader("Confusion-matrix shift")
        n = model.num_classes
        cm0, cm1 = np.zeros((n, n)), np.zeros((n, n))
        np.add.at(cm0, (y, orig_pred), 1)
        np.add.at(cm1, (y, filt_pred), 1)
        st.plotly_chart(figures.confusion_shift(cm0, cm1, names, forget), key=f"confusion_{phase}")
    with right:
        st.subheader("Where the forgotten classes' predictions go")
        if forget:
            st.plotly_chart(figures.prediction_flow(y, filt_pred, names, forget), key=f"flow_{phase}")
        else:
            st.caption("Forget a class to see where its images are sent.")
    if phase == "all":
        gallery(y, orig_pred, filt_pred, filt_conf, indices)
    ms = (time.perf_counter() - started) * 1000
    if phase == "estimate":
        waited.metric("Estimate after", f"{ms:,.0f} ms",
                      help="All images follow: this set is new and slow to evaluate, so a stratified part comes first")
    else:
        waited.metric("Update time", f"{ms:,.0f} ms",
                      None if first_shown is None else f"estimate shown after {(first_shown - started) * 1000:,.0f} ms",
                      delta_color="off",
                      help="What you waited: from your change to this page drawn in full (a set already evaluated "
                           "is read back; a new one is evaluated now, then kept)")


def arithmetic() -> str:
    """Which arithmetic the numbers come from, and how close bfloat16's answers are to float32's (its guard)."""
    p = answers.predictor
    if p.agreement is None:
        return "Computed in float32."
    margin = (p.agreement - p.min_agreement) * 100
    if p.bfloat16:
        return (f"Computed in bfloat16 (faster for this network here): its top-1 predictions agree with float32's on "
                f"{p.agreement:.2%} of these images (worst of: nothing, one class, three classes forgotten; the guard "
                f"asks ≥ {p.min_agreement:.1%}, margin {margin:.2f} pp), so a number here may differ from "
                "`wfexplain evaluate` by a few images. WFEXPLAIN_PRECISION=float32 on the server turns it off.")
    return (f"Computed in float32: bfloat16 was refused for this checkpoint (its predictions agree with float32's on "
            f"{p.agreement:.2%} of these images, below the guard's {p.min_agreement:.1%}).")


def verdicts(fa: float, ra: float, ra0: float, y: np.ndarray, filt_pred: np.ndarray) -> None:
    """Forgetting and the damage to the rest, judged apart; what makes them mislead; what was recorded."""
    colour = {"good": "green", "partial": "orange", "poor": "red"}
    forgot, kept = quality.forgetting(fa), quality.retention(ra, ra0, len(forget))
    b = st.columns([1, 1, 4])
    b[0].badge(forgot.label, color=colour[forgot.level], help=(
        f"Forgotten: forget accuracy ≤ {quality.FORGOTTEN_AT_MOST:.0%}; not forgotten: above "
        f"{quality.NOT_FORGOTTEN_ABOVE:.0%}. Judged on the forgotten classes only."))
    b[1].badge(kept.label, color=colour[kept.level], help=(
        f"Kept: retain accuracy drops at most {quality.retain_tolerance(len(forget)) * 100:g} pp for {len(forget)} "
        "class(es); damaged: at most twice that; broken: more. Judged on the other classes only."))
    if why := "; ".join(forgot.reasons + kept.reasons):
        st.caption(why[0].upper() + why[1:] + ".")
    if doubts := quality.degenerate(y, filt_pred, forget, model.num_classes):
        st.warning("These numbers mislead here: " + "; ".join(doubts) + ".")
    trained, measured = quality.set_sizes(manifest)
    if (m := quality.measured_size(manifest, len(forget))) is not None:
        count = m.get("count")
        st.caption(f"Recorded for sets of {len(forget)} class(es) on the test split"
                   + (f" ({count} {'sampled ' if m.get('sampled') else ''}sets)" if count else "")
                   + f": forget accuracy {m['forget_accuracy_mean']:.1%} mean, {m['forget_accuracy_max']:.1%} worst; "
                     f"retain {m['retain_accuracy_mean']:.1%} (original {m['original_retain_accuracy_mean']:.1%}).")
    elif measured:
        st.caption(f"No recorded evaluation for sets of {len(forget)} classes (measured: sizes "
                   f"{', '.join(map(str, measured))}); this adds it:")
        st.code(suggested.evaluate_sets(view.path, len(forget), data_path(view.data)), language="bash")
    if trained is not None and len(forget) > trained:
        st.warning(f"This set has {len(forget)} classes; the filters were trained on sets of 1–{trained} classes"
                   + (f" and measured on sets of {', '.join(map(str, measured))}" if measured else "")
                   + ". Larger sets multiply more filters than training saw: expect weaker forgetting or retain.")


def gallery(y: np.ndarray, orig_pred: np.ndarray, filt_pred: np.ndarray, filt_conf: np.ndarray,
            indices: np.ndarray) -> None:
    st.subheader("Gallery: predictions before → after")
    per_class = st.slider("Images per class", 1, 8, 4)
    shown = list(forget) or list(range(min(3, model.num_classes)))
    others = [k for k in range(model.num_classes) if k not in shown][:2]
    for k in shown + others:
        idx = np.flatnonzero(y == k)[:per_class]
        st.markdown(f"**{escape_markdown(names[k], 100)}**" + (" — forgotten" if k in forget else " — retained"))
        cols = st.columns(per_class)
        for col, i in zip(cols, idx, strict=False):
            before = escape_markdown(names[orig_pred[i]], 100, line_start=True)  # an image caption is markdown
            after = escape_markdown(names[filt_pred[i]], 100)
            if k in forget:  # success means the class is no longer recognised
                mark = "✓ forgotten" if filt_pred[i] != y[i] else "✗ still recognised"
            else:
                mark = "✓" if filt_pred[i] == y[i] else "✗ wrong"
            col.image(data.dataset.pil(int(indices[i])).resize((84, 84)), width=84,  # one size for every thumbnail
                      caption=f"{before} → {after} {mark} ({filt_conf[i]:.0%})")


body, first_shown = st.empty(), None
if forget and not answers.has(forget) and not answers.seconds_per_set < ESTIMATE_ABOVE_S:
    # a never-seen set on a slow path: a stratified estimate first, replaced in this same run by all images
    part, est_pred, est_conf = answers.estimate(forget, data.targets)
    pending.empty()
    with body.container():
        draw(part.numpy(), est_pred.numpy(), est_conf.numpy(), "estimate")
    first_shown = time.perf_counter()  # the estimate is on the page (sent as it was drawn)
filt_pred, filt_conf = predictions(view, forget)
pending.empty()
with body.container():
    draw(None, filt_pred, filt_conf, "all")
