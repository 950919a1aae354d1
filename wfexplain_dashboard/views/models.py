"""Models: the loaded checkpoint's card; train a base model or run the unlearning round."""

import dataclasses
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from wfexplain import figures
from wfexplain.backbones import list_backbones
from wfexplain.data import list_datasets
from wfexplain.distributed import resolve_device
from wfexplain.engine import TrainConfig, UnlearnConfig
from wfexplain.explain import analysis
from wfexplain.gate_coverage import coverage
from wfexplain.history import history_csv, read_history
from wfexplain.pipeline import train_checkpoint, unlearn_checkpoint
from wfexplain_dashboard.job_panel import job_panel, running, start_job
from wfexplain_dashboard.jobs import Job
from wfexplain_dashboard.resources import current
from wfexplain_dashboard.settings import DEVICE, SHIPPED_DIR, job_caps, user_checkpoint_dir
from wfexplain_dashboard.text import escape_markdown, public_manifest

USER_DIR = user_checkpoint_dir()  # server-side setting; never shown in the page
CAPS = job_caps()  # this server's limits per job: widget maxima, checked again before a start

view = current()
model, man = view.model, view.model.manifest
st.title("Models")

# ---------------------------------------------------------------- card
layers = analysis.memory_summary(model)
total = layers[-1]
backbone_params = sum(p.numel() for p in model.backbone.parameters())
metrics = man.metrics
timings = man.timings
c = st.columns(4)
c[0].metric("Backbone", escape_markdown(model.backbone_name, 60))  # metric values are markdown; names are manifest data
c[1].metric("Dataset", escape_markdown(model.info.name, 60), f"{model.num_classes} classes", delta_color="off",
            delta_arrow="off")
acc = metrics.get("original_accuracy")
c[2].metric("Test accuracy (↑)", f"{acc:.2%}" if acc is not None else "—")
c[3].metric("Memory size", f"{total['memory_entries']:,} alphas",
            f"{total['percent_of_backbone']:.2f}% of {backbone_params:,} weights",
            delta_color="off", delta_arrow="off")
st.caption(escape_markdown(man.backbone_description, 1000))

left, right = st.columns(2)
with left:
    st.subheader("Gated layers")
    st.dataframe(pd.DataFrame(layers), hide_index=True, height=240)
with right:
    st.subheader("Training")
    ev = metrics.get("evaluation") or metrics.get("unlearn_eval")
    rows = {"train time (s)": timings.get("train_seconds"), "unlearning time (s)": timings.get("unlearn_seconds")}
    if ev:
        rows |= {"forget accuracy, single classes (↓)": ev.get("single", ev).get("forget_accuracy_mean"),
                 "retain accuracy, single classes (↑)": ev.get("single", ev).get("retain_accuracy_mean")}
    st.dataframe(pd.DataFrame({"value": rows}), height=240)
cov = coverage(model)  # computed (and kept) in the library; the probe part only where it is cheap
st.subheader("Gate coverage")
st.caption("Gate sites (components) per stage and kind; below, the layers left ungated and why, and the gates that "
           "never changed the output.")
st.dataframe(pd.DataFrame(cov.table()), hide_index=True)
if cov.notes():
    st.dataframe(pd.DataFrame(cov.notes()), hide_index=True, height=min(240, 38 + 35 * len(cov.notes())))
with st.expander("Resolved configuration (manifest.json)"):
    st.json(public_manifest(man), expanded=1)

# ---------------------------------------------------------------- history
history = read_history(view.path)
stages = list(dict.fromkeys(r["stage"] for r in history))
with st.expander(f"History: every step reported ({', '.join(stages) or 'none recorded'})", expanded=bool(stages)):
    if not stages:
        st.caption("This checkpoint was made before runs kept their history (history.csv beside the manifest).")
    for stage in stages:
        st.plotly_chart(figures.history_curves(history, stage), width="stretch", key=f"history-{stage}")
    if stages:
        st.download_button("History (.csv)", history_csv(history), f"{view.name.replace('/', '_')}-history.csv",
                           "text/csv", on_click="ignore")

# ---------------------------------------------------------------- training jobs
st.header("Train")
st.write("New checkpoints are written to the server's user checkpoint folder and appear in the sidebar's "
         "**Checkpoint** list as `user/NAME`; existing checkpoints are never overwritten. This server runs at most "
         f"{CAPS.epochs:,} epochs, {CAPS.train_images:,} training images and {CAPS.unlearn_steps:,} unlearning steps "
         "per job.")


def _target(name: str) -> Path | None:
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        st.error("Give a plain directory name (letters, digits, dots, dashes, underscores; up to 64 characters).")
        return None
    out = (USER_DIR / name).resolve()
    if SHIPPED_DIR is not None and out.is_relative_to(SHIPPED_DIR.resolve()):
        st.error("That would overwrite a shipped checkpoint; choose another name.")
        return None
    if out.exists() or out.is_symlink():
        st.error(f"A checkpoint named `{name}` already exists; choose another name.")
        return None
    return out


def name_input(col, key: str, default: str) -> str:
    """The "Checkpoint name" box, keyed: a name the user typed is kept whatever else the form changes.

    Only an untouched name (still the default it was last drawn with) follows ``default``, which is derived
    from the form's other choices (dataset and backbone) or the loaded checkpoint. Without a key the box's identity
    included its default, so changing the dataset in the same submission made a new box and dropped the typed name.
    """
    shown = f"{key}_default"  # the default the box was last drawn with
    current = st.session_state.get(key)
    if (current is None or current == st.session_state.get(shown)) and current != default:
        st.session_state[key] = default  # before the box is drawn: allowed, and it shows the new default
    st.session_state[shown] = default
    return col.text_input("Checkpoint name", key=key)


busy = running("job")
kind = st.radio("What to run", ["Train a base model", "Unlearning round on the loaded checkpoint"], horizontal=True,
                disabled=busy)
with st.form("train_form"):
    if kind == "Train a base model":
        a, b, c2 = st.columns(3)
        dataset = a.selectbox("Dataset", list_datasets())
        backbone = b.selectbox("Backbone", list_backbones())
        epochs = c2.number_input("Epochs", 1, CAPS.epochs, min(2, CAPS.epochs))
        limit = a.number_input(f"Training images (0 = all, up to {CAPS.train_images:,})", 0, CAPS.train_images,
                               min(5000, CAPS.train_images), step=1000)
        name = name_input(b, "train_name", f"{dataset}-{backbone}")
    else:
        a, b, c2 = st.columns(3)
        steps = a.number_input("Steps", min(10, CAPS.unlearn_steps), CAPS.unlearn_steps,
                               min(UnlearnConfig.steps, CAPS.unlearn_steps), step=100)
        lr = b.number_input("Learning rate", 1e-4, 1.0, UnlearnConfig.lr, format="%.4f")
        max_set = c2.number_input("Max forget-set size k", 1, model.num_classes - 1, UnlearnConfig.max_set_size)
        limit = a.number_input(f"Training images (0 = all, up to {CAPS.train_images:,})", 0, CAPS.train_images, 0,
                               step=1000)
        name = name_input(b, "unlearn_name", f"{Path(view.name).name}-unlearned")
    submitted = st.form_submit_button("Start", type="primary", disabled=busy)


def _within_caps() -> bool:
    """The server-side check of what the form asked (the widgets' maxima are only the browser's side)."""
    try:
        CAPS.check(epochs=int(epochs) if kind == "Train a base model" else None, train_images=limit_train,
                   unlearn_steps=None if kind == "Train a base model" else int(steps))
    except ValueError as e:
        st.error(f"Cannot start: {e}")
        return False
    return True


limit_train = (int(limit) or CAPS.train_images) if submitted else None  # "all" = all up to the cap
if submitted and (out := _target(name)) is not None and _within_caps():
    if kind == "Train a base model":
        cfg = TrainConfig(epochs=int(epochs))
        fn = lambda progress, stop: train_checkpoint(  # noqa: E731
            dataset, backbone, out, cfg, limit_train=limit_train, progress=progress, should_stop=stop,
            device=resolve_device(DEVICE))
    else:
        cfg = UnlearnConfig(steps=int(steps), lr=float(lr), max_set_size=int(max_set))
        src = view.path
        fn = lambda progress, stop: unlearn_checkpoint(  # noqa: E731
            src, cfg, out=out, limit_train=limit_train, eval_limit=2000, progress=progress, should_stop=stop,
            device=resolve_device(DEVICE))
    if start_job("job", Job(fn, f"user/{out.name}")):
        st.session_state["job_config"] = dataclasses.asdict(cfg)
        st.rerun()


job_panel("job", lambda job, s: f"Saved the checkpoint `{job.label}` in {s.finished - s.started:.0f} s. Open it from "
          "the sidebar's **Checkpoint** list.")
