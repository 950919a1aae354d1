"""Memory matrices: which components each class's filter switches off, and what the sidebar's forget set switches off."""

import numpy as np
import pandas as pd
import streamlit as st

from wfexplain import figures
from wfexplain.explain import analysis, sets
from wfexplain_dashboard.resources import current, eval_data, predictions
from wfexplain_dashboard.scoring import live_scores
from wfexplain_dashboard.sidebar import page_at
from wfexplain_dashboard.text import escape_markdown
from wfexplain_dashboard.views import memory_deletion

view = current()
model, forget = view.model, view.forget
names = list(model.class_names)
memory = model.memory
layers = list(memory)
st.title("Memory matrices")
st.caption("Row c of a layer's matrix is the filter that forgets class c: alpha = 1 keeps a component, "
           "alpha = 0 switches it off. Forgetting a set multiplies its rows.")


def percent(x: float) -> str:
    return "—" if np.isnan(x) else f"{x:.1%}"


if forget:
    st.subheader("Forget set: " + " + ".join(escape_markdown(n, 60) for n in view.forget_names))
    data = eval_data(view)  # the Forget page's live scoring, from the same cached answers
    s = live_scores(data.targets.numpy(), predictions(view, ())[0], predictions(view, forget)[0], model.num_classes,
                    forget)
    st.markdown(f"With this set filtered out, forget accuracy is **{percent(s['forget'])}** (↓ lower is better; "
                f"original {percent(s['original_forget'])}) and retain accuracy **{percent(s['retain'])}** "
                f"(↑ higher is better; original {percent(s['original_retain'])}) on the {len(data.targets):,} "
                "test images the Forget page scores. Below: the components its filter switches off to get there.")
    st.page_link(page_at("forget"), label="Forget page: where the set's images go", icon=":material/visibility_off:")
else:
    st.info("Choose classes to forget in the sidebar (**Forget classes**) to see what that set switches off in each "
            "layer: its combined gate, and which components are unique to it or shared with the classes it keeps.")

default = sets.default_layer(memory)
a, b, c, d = st.columns([2, 1, 1, 1])
layer = a.selectbox("Layer", layers, index=layers.index(default),
                    format_func=lambda p: f"{p} ({memory[p].shape[1]} components)" + (" — default" if p == default else ""),
                    help="Opens on the layer whose filters differ most between classes (largest mean spread of alpha "
                         "over the classes); a layer every filter leaves alone is one flat colour.")
mode = b.selectbox("Component order", analysis.ORDER_MODES,
                   help="original; grouped by the class each component is most specific to; or clustered")
threshold = c.slider("Threshold", 0.0, 1.0, 0.5, 0.05, help="alpha below this counts as switched off")
binary = d.toggle("On/off", help="Off: alpha's values on the colour scale of the exported "
                  "figures (viridis). On: two colours, switched off (alpha below the threshold) in red.")

alpha = memory[layer]
order = analysis.order_components(alpha, mode)
shown_order = None if mode == "original" else order
if forget:
    gates = sets.combined_gate(memory, forget)
    st.caption("Top row: the set's combined gate (the product of its classes' rows, what the filter applies), on "
               "the same scale; then the set's classes, a dashed line, and the classes it keeps.")
    st.plotly_chart(figures.set_memory_heatmap(alpha, gates[layer], names, forget, order=shown_order,
                                                   threshold=threshold if binary else None))
    st.subheader("What the set switches off, per layer")
    rows = sets.set_components(memory, forget, threshold)
    total = sets.set_totals(rows)
    st.caption(f"Over all {total['layers']} layers the set switches off {total['off']:,} of {total['components']:,} "
               f"components ({total['off_fraction']:.1%}; combined gate < {threshold:.2f}): "
               f"{total['unique']:,} unique to the set, {total['shared']:,} shared with at least one retained "
               "class, whose own filter switches them off too.")
    st.plotly_chart(figures.set_components_bars(rows, threshold, "the set"))
else:
    st.plotly_chart(figures.memory_heatmap(alpha, names, order=shown_order, threshold=threshold if binary else None))

left, right = st.columns(2)
with left:
    st.subheader("Sparsity per class")
    st.caption(f"Fraction of components with alpha < {threshold:.2f}: one row per layer, one column per class")
    st.plotly_chart(figures.sparsity_heatmap(analysis.sparsity(memory, threshold), names, threshold))
with right:
    st.subheader("Class similarity")
    st.caption("Cosine of the classes' suppression vectors (1 − alpha) over all layers, dendrogram order")
    sim = analysis.class_similarity(memory)
    leaves = analysis.class_dendrogram(sim)["leaves"]
    st.plotly_chart(figures.similarity_heatmap(sim, names, order=leaves))

st.subheader("Most specific components of a class")
cls = st.selectbox("Class", range(len(names)), format_func=lambda i: names[i],
                   index=view.forget[0] if view.forget else 0)
top = analysis.top_components(memory, cls, k=15)
st.dataframe(pd.DataFrame(top), hide_index=True)

st.subheader("Component inspector")
i1, i2 = st.columns([2, 1])
pick_layer = i1.selectbox("Component layer", layers, index=layers.index(top[0]["layer"]) if top else 0)
pick = i2.number_input("Component index", 0, memory[pick_layer].shape[1] - 1,
                       top[0]["index"] if top and top[0]["layer"] == pick_layer else 0)
p1, p2 = st.columns([1, 1])
with p1:
    st.plotly_chart(figures.component_profile_bar(analysis.component_profile(memory, pick_layer, int(pick)), names,
                                                  title=f"{pick_layer}[{pick}]: alpha in each class's filter"))
with p2:
    st.caption("Test images that activate it most (original model)")
    data = eval_data(view)
    best = analysis.top_activating(model, data.images[:512], pick_layer, int(pick), k=8)
    cols = st.columns(4)
    for j, i in enumerate(best):
        cols[j % 4].image(data.dataset.pil(int(data.indices[i])).resize((84, 84)),  # a caption is markdown: escaped
                          caption=escape_markdown(names[int(data.targets[i])], 100, line_start=True), width=84)

memory_deletion.section(view)  # deletion curves: do the components the filter ranks first carry the class?
