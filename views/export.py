"""Export: paper-ready figures, memory matrices, metric tables and the baked model."""

import streamlit as st

from dashboard import current
from dashboard.resources import (
    baked_file,
    live_answers,
    memory_figure_files,
    memory_files,
    predictions,
    single_class_report,
    view_set_row,
)
from wfexplain import export, figures
from wfexplain.explain import analysis

view = current()
model = view.model
names = list(model.class_names)
stem = view.name.replace("/", "_")
st.title("Export")
st.caption("Static figures are drawn with matplotlib (PNG at 300 dpi, SVG, PDF); the same exports are available "
           "from the command line: `wfexplain export --checkpoint DIR --out DIR [--forget 0 6]`.")

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
                            key=f"heatmap_{fmt}")
    st.image(files["preview"])
else:
    st.info("Choose at least one layer.")

st.subheader("Memory matrices")
c1, c2 = st.columns(2)
tables = memory_files(view.path)
c1.download_button("memory.csv", tables["csv"], f"{stem}-memory.csv", "text/csv", key="memory_csv")
c2.download_button("memory.npz", tables["npz"], f"{stem}-memory.npz", "application/octet-stream", key="memory_npz")

st.subheader("Metric tables")
answers = live_answers(view)
missing = [c for c in range(model.num_classes) if not answers.has((c,))]
if missing:  # not yet precomputed: each class's filter, with progress
    bar = st.progress(0.0)
    for i, c in enumerate(missing):
        bar.progress(i / len(missing), text=f"Evaluating the filter of {names[c]} ({i + 1} of {len(missing)})…")
        predictions(view, (c,))
    bar.empty()
report = single_class_report(view)
# the table, caption and LaTeX of `wfexplain export`, plus the session's own forget set as one more row
table, caption, tex = export.metrics_export(view.model, report, f"tab:{stem}", view_set_row(view) if view.forget else None)
st.dataframe(table.set_index("class"), height="content")  # every class and the mean row, no scrolling
st.caption(caption)
t1, t2 = st.columns(2)
t1.download_button("metrics.csv", export.table_csv(table), f"{stem}-metrics.csv", "text/csv", key="metrics_csv")
t2.download_button("metrics.tex", tex, f"{stem}-metrics.tex", "application/x-tex", key="metrics_tex")

st.subheader("Attribution panels")
panels = st.session_state.get("attribution_figures") or {}
if not panels:
    st.caption("Compute attributions on the **Explain** page; every method drawn there appears here.")
for name, panel in panels.items():  # file stem -> figure: checkpoint, method, target and forget set in the name
    cols = st.columns([3, 1, 1, 1])
    cols[0].markdown(f"`{name}`")
    for col, fmt in zip(cols[1:], ("png", "svg", "pdf"), strict=True):
        col.download_button(f".{fmt}", figures.figure_bytes(panel, fmt), f"{name}.{fmt}",
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
                       key="baked")  # soft and hard bakes get distinct names
    st.caption("A plain state dict (no gates) of the checkpoint's own architecture: load it into a fresh copy "
               "(built-in backbones: `wfexplain.create_backbone(...)`).")
