"""Forget (live): what changes when the sidebar's forget set is filtered out."""

import time

import numpy as np
import streamlit as st

from wfexplain import figures
from wfexplain.evaluation import quality
from wfexplain_dashboard.resources import PRECOMPUTE, current, eval_data, live_answers, predictions
from wfexplain_dashboard.scoring import live_scores
from wfexplain_dashboard.sidebar import page_at
from wfexplain_dashboard.text import escape_markdown, public_text

ESTIMATE_ABOVE_S = 0.3  # a set that took longer than this to evaluate is first shown as an estimate

view = current()
model, forget = view.model, view.forget
names = list(model.class_names)
st.title("Forget")
st.page_link(page_at("about"), label="New here? What weight filtering is, and a first walk through the pages",
             icon=":material/info:")

start = time.perf_counter()  # the update time below covers the whole page, drawn last
data = eval_data(view)
answers = live_answers(view)
rows = slice(None)  # the evaluation images shown: all, or a stratified part while an estimate is refined
orig_pred, _ = predictions(view, ())
estimating = bool(forget) and not answers.has(forget) and not answers.seconds_per_set < ESTIMATE_ABOVE_S
if estimating:  # a never-seen set on a slow path: a stratified estimate now, all images right after
    part, est_pred, est_prob = answers.estimate(forget, data.targets)
    rows, filt_pred, filt_prob = part.numpy(), est_pred.numpy(), est_prob.numpy()
    orig_pred = orig_pred[rows]
    st.info(f"**Estimate** on {len(rows):,} of {len(data.targets):,} test images (stratified by class); "
            "refining to all of them…")
else:
    filt_pred, filt_prob = predictions(view, forget)
y = data.targets.numpy()[rows]
indices = data.indices.numpy()[rows]

scores = live_scores(y, orig_pred, filt_pred, model.num_classes, forget)
orig_acc, filt_acc = scores["original_per_class"], scores["per_class"]

if not forget:
    st.info("Choose classes to forget in the sidebar (**Forget classes**): any subset is applied live, as the product "
            "of their filters, and this page says how well sets of that size were trained and measured. Until then "
            "it shows the original model.")

c = st.columns([3, 3, 2, 2])  # room for the metric labels with their direction
fa, fa0, ra, ra0 = scores["forget"], scores["original_forget"], scores["retain"], scores["original_retain"]  # nan: none
c[0].metric("Forget accuracy (↓ lower is better)", "—" if not forget else f"{fa:.1%}",
            None if not forget else f"{quality.points(fa - fa0)} vs original", delta_color="inverse",
            help="Accuracy on test images of the forgotten classes, with their filter on. Retraining without them gives ~0.")
c[1].metric("Retain accuracy (↑ higher is better)", "—" if np.isnan(ra) else f"{ra:.1%}",
            None if np.isnan(ra) else f"{quality.points(ra - ra0)} vs original",
            help="Accuracy on test images of all other classes, with the filter on; compared with the original model "
                 "on the same images.")
c[2].metric("Test images", f"{len(y):,}", help="A seeded, class-stratified subset of the test split")
update_time = c[3].empty()


@st.fragment(run_every=2.0 if PRECOMPUTE and answers.done < answers.total and not answers.error else None)
def precompute_status() -> None:
    note = escape_markdown(public_text(answers.note), 600)  # no server path (a key file's) on the page
    note = note[:1].upper() + note[1:] + "." if note else ""
    if answers.error:  # the background run stopped (its note says where and why): never "15 of 56 done" forever
        st.warning(note)
    elif answers.done < answers.total and PRECOMPUTE:
        st.caption(f"Evaluating every single class and pair in the background: {answers.done} of {answers.total} "
                   "done; those sets are then instant.")
    elif answers.done < answers.total:
        st.caption("Each forget set is evaluated when first chosen, then kept (this server does not precompute "
                   "them: WFEXPLAIN_PRECOMPUTE=0).")
    else:
        st.caption(f"All {answers.total - 1} single classes and pairs are precomputed (instant); larger sets are "
                   "evaluated when first chosen.")
    if answers.rejected:
        st.warning(f"Ignored {answers.rejected} precomputed answers file{'s' * (answers.rejected > 1)} that failed "
                   "its integrity check (tampered, damaged or signed elsewhere): those answers are recomputed, "
                   "never shown.")
    if note and not answers.error:
        st.caption(note)


precompute_status()

if forget:
    verdict = quality.judge(fa, ra, ra0, len(forget))
    colour = {"good": "green", "partial": "orange", "poor": "red"}[verdict.level]
    st.badge(verdict.label, color=colour, help=(
        f"Forgotten: forget accuracy ≤ {quality.FORGOTTEN_AT_MOST:.0%}; not forgotten: above "
        f"{quality.NOT_FORGOTTEN_ABOVE:.0%}. Retain accuracy may drop at most "
        f"{quality.retain_tolerance(len(forget)) * 100:g} pp for {len(forget)} class(es)."))
    if verdict.reasons:
        why = "; ".join(verdict.reasons)
        st.caption(why[0].upper() + why[1:] + ".")
    manifest = model.checkpoint_manifest()
    trained, measured = quality.set_sizes(manifest)
    if (m := quality.measured_size(manifest, len(forget))) is not None:
        count = m.get("count")
        st.caption(f"Recorded for sets of {len(forget)} class(es) on the test split"
                   + (f" ({count} {'sampled ' if m.get('sampled') else ''}sets)" if count else "")
                   + f": forget accuracy {m['forget_accuracy_mean']:.1%} mean, {m['forget_accuracy_max']:.1%} worst; "
                     f"retain {m['retain_accuracy_mean']:.1%} (original {m['original_retain_accuracy_mean']:.1%}).")
    elif measured:
        st.caption(f"No recorded evaluation for sets of {len(forget)} classes (measured: sizes "
                   f"{', '.join(map(str, measured))}; `wfexplain evaluate --sets {len(forget)} --record` adds it).")
    if trained is not None and len(forget) > trained:
        st.warning(f"This set has {len(forget)} classes; the filters were trained on sets of 1–{trained} classes"
                   + (f" and measured on sets of {', '.join(map(str, measured))}" if measured else "")
                   + ". Larger sets multiply more filters than training saw: expect weaker forgetting or retain.")

st.plotly_chart(figures.accuracy_bars(orig_acc, filt_acc, names, forget))

left, right = st.columns(2)
with left:
    st.subheader("Confusion-matrix shift")
    n = model.num_classes
    cm0 = np.zeros((n, n))
    cm1 = np.zeros((n, n))
    np.add.at(cm0, (y, orig_pred), 1)
    np.add.at(cm1, (y, filt_pred), 1)
    st.plotly_chart(figures.confusion_shift(cm0, cm1, names))
with right:
    st.subheader("Where the forgotten classes' predictions go")
    if forget:
        st.plotly_chart(figures.prediction_flow(y, filt_pred, names, forget))
    else:
        st.caption("Forget a class to see where its images are sent.")

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
                  caption=f"{before} → {after} {mark} ({filt_prob[i].max():.0%})")

update_time.metric("Update time", f"{(time.perf_counter() - start) * 1000:.0f} ms",
                   help="Time to draw this whole page (every single class and pair is precomputed; other sets are "
                        "evaluated on first use, then cached)")
if estimating:
    predictions(view, forget)  # all images, then the page is drawn again from them
    st.rerun()
