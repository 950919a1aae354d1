"""Export: paper-ready figures, memory matrices, metric tables and the baked model."""

import streamlit as st

from wfexplain import export, figures, suggested
from wfexplain.explain import analysis
from wfexplain_dashboard.job_panel import job_panel, running, start_job
from wfexplain_dashboard.jobs import Job
from wfexplain_dashboard.resources import baked_file, current, live_answers, memory_figure_files, memory_files, predictions
from wfexplain_dashboard.scoring import single_class_report, view_set_row
from wfexplain_dashboard.settings import data_path, job_caps
from wfexplain_dashboard.text import escape_markdown

view = current()
model = view.model
names = list(model.class_names)
stem = view.name.replace("/", "_")
st.title("Export")
st.caption("Static figures are drawn with matplotlib (PNG at 300 dpi, SVG, PDF); the same exports (with the sidebar's "
           "forget set baked into a model) come from the command line:")
st.code(suggested.export(view.path, view.forget, data_path(view.data)), language="bash")

st.subheader("Memory-matrix heatmaps")
a, b = st.columns([3, 1])
layers = a.multiselect("Layers", list(model.memory), default=list(model.memory)[-2:],
                       help="One panel per layer, one colour scale (alpha in [0, 1]) shared across all of them")
order = b.selectbox("Component order", analysis.ORDER_MODES)
if layers:
    files = memory_figure_files(view.path, tuple(layers), order)  # cached: reruns do not redraw
    cols = st.columns(3)
    for col, fmt in zip(cols, figures.FIGURE_FORMATS, strict=True):
        col.download_button(f"Heatmap .{fmt}", files[fmt], f"{stem}-memory.{fmt}",
                            mime=figures.FIGURE_MIME[fmt],
                            key=f"heatmap_{fmt}", on_click="ignore")
    st.image(files["preview"])
else:
    st.info("Choose at least one layer.")

st.subheader("Memory matrices")
c1, c2 = st.columns(2)
tables = memory_files(view.path)
c1.download_button("memory.csv", tables["csv"], f"{stem}-memory.csv", "text/csv", key="memory_csv", on_click="ignore")
c2.download_button("memory.npz", tables["npz"], f"{stem}-memory.npz", "application/octet-stream", key="memory_npz",
                   on_click="ignore")

st.subheader("Metric tables")
answers = live_answers(view)
missing = [c for c in range(model.num_classes) if not answers.has((c,))]
if missing:  # not yet precomputed: each class's filter, with progress
    bar = st.progress(0.0)
    for i, c in enumerate(missing):
        bar.progress(i / len(missing),
                     text=f"Evaluating the filter of {escape_markdown(names[c], 100)} ({i + 1} of {len(missing)})…")
        predictions(view, (c,))
    bar.empty()
report = single_class_report(view)
# the table, caption and LaTeX of `wfexplain export`, plus the session's own forget set as one more row
table, caption, tex = export.metrics_export(view.model, report, f"tab:{stem}", view_set_row(view) if view.forget else None)
st.dataframe(table.set_index("class"), height="content")  # every class and the mean row, no scrolling
st.caption(escape_markdown(caption, 2000))  # it names the backbone and dataset: manifest data
t1, t2 = st.columns(2)
t1.download_button("metrics.csv", export.table_csv(table), f"{stem}-metrics.csv", "text/csv", key="metrics_csv",
                   on_click="ignore")
t2.download_button("metrics.tex", tex, f"{stem}-metrics.tex", "application/x-tex", key="metrics_tex", on_click="ignore")

st.subheader("Attribution panels")
panels = st.session_state.get("attribution_figures") or {}
if not panels:
    st.caption("Compute attributions on the **Explain** page; every method drawn there appears here.")
for name, panel in panels.items():  # file stem -> its files: checkpoint, method, target and forget set in the name
    cols = st.columns([3, 1, 1, 1])
    cols[0].markdown(f"`{name}`")
    for col, fmt in zip(cols[1:], ("png", "svg", "pdf"), strict=True):
        col.download_button(f".{fmt}", panel[fmt], f"{name}.{fmt}",
                            figures.FIGURE_MIME[fmt],
                            key=f"attr_{name}_{fmt}", on_click="ignore")

st.subheader("Baked model")
if not view.forget:
    st.caption("Choose a forget set in the sidebar to export a model with that filter folded into its weights.")
else:
    hard = st.toggle("Hard bake (zero components whose gate is below a threshold)")
    tau = st.slider("Threshold", 0.0, 1.0, 0.5, 0.05, disabled=not hard)
    data = baked_file(view.path, view.forget, tau if hard else None)
    st.download_button(f"Baked model forgetting {', '.join(view.forget_names)} (.safetensors)", data,
                       f"{stem}-{export.baked_name(view.forget, tau if hard else None)}", "application/octet-stream",
                       key="baked", on_click="ignore")  # soft and hard bakes get distinct names
    st.caption("A plain state dict (no gates) of the checkpoint's own architecture: load it into a fresh copy "
               "(built-in backbones: `wfexplain.create_backbone(...)`).")

st.subheader("Removed model (prune and repair)")
REMOVE_JOB = "remove_job"
st.write("A bake *suppresses* the forgotten classes: fine-tuning on a few of their images brings them back within "
         "a few steps. Removal zeroes every component whose gate is below the threshold and every weight only those "
         "components feed, then fine-tunes the rest of the network on the training images of the retained classes "
         "only, the removed weights held at zero. It is one short training per forget set (a minute or more on a "
         "CPU), not a live toggle; the command line does the same (below, for the sidebar's set). "
         "Measured on fmnist-cnn only: a removed class took 10.5 Adam steps to relearn (median of 10; Retrain 7, "
         "a bake 1–2) at 0.5 points of retain accuracy (docs/method.md, *Removal: prune and repair*).")
if not view.forget:
    st.caption("Choose a forget set in the sidebar to remove it from the weights.")
else:
    busy, caps = running(REMOVE_JOB), job_caps()
    c1, c2 = st.columns(2)
    steps = c1.number_input("Repair steps", 0, caps.unlearn_steps, min(1000, caps.unlearn_steps), 100, disabled=busy,
                            help="Adam steps of 64 retained-class training images (0: prune only)")
    threshold = c2.slider("Removal threshold", 0.05, 1.0, 0.5, 0.05, disabled=busy)
    st.code(suggested.remove(view.path, view.forget, data_path(view.data), int(steps), threshold), language="bash")
    if st.button("Remove and repair", disabled=busy, key="remove_run"):
        forget, filtered = list(view.forget), model
        gone = escape_markdown(", ".join(view.forget_names), 300)  # class names are data: label and button are markdown

        def run(progress, stop) -> dict:
            from wfexplain.removal import RemovalConfig, remove
            from wfexplain.splits import checkpoint_train_split

            cfg = RemovalConfig(threshold=threshold, steps=int(steps))
            train = checkpoint_train_split(filtered.checkpoint_manifest())
            out = remove(filtered, forget, train, cfg, progress, stop)  # the shared model is only read
            if out["cancelled"]:
                return {"cancelled": True}
            return {"data": export.removed_safetensors(filtered, forget, out, cfg), "cancelled": False,
                    "name": f"{stem}-{export.removed_name(forget)}", "removed_weights": out["removed_weights"],
                    "gone": gone}

        try:
            caps.check(unlearn_steps=int(steps) or None)
        except ValueError as e:
            st.error(f"Cannot start: {e}")
        else:
            if start_job(REMOVE_JOB, Job(run, f"removal of {gone}")):
                st.rerun()
if REMOVE_JOB in st.session_state:  # no panel (and no fragment) until a removal was started
    job_panel(REMOVE_JOB, lambda job, s: f"{job.label}: {s.result['removed_weights']:,} weights removed, repaired in "
                                         f"{s.finished - s.started:.0f} s.", failure="The removal failed",
              cancelled="Cancelled: no model kept.")
removal = st.session_state.get(REMOVE_JOB)
if removal is not None and (done := removal.state()).done and done.result and "data" in done.result:
    st.download_button(f"Removed model without {done.result['gone']} (.safetensors)", done.result["data"],
                       done.result["name"],
                       "application/octet-stream", key="removed", on_click="ignore")
