"""Explain: Captum attributions of the original and the filtered model, side by side, for one image or averaged over
a class's test images (that mode: views/explain_data.py)."""

import numpy as np
import pandas as pd
import streamlit as st

from wfexplain import explain, export, figures
from wfexplain.explain.uploads import (
    FORMATS,
    LIMIT_TEXT,
    MAX_BYTES,
    SHAPE_TEXT,
    UploadError,
    display_copy,
    out_of_domain,
    preprocessing_text,
    read_image,
)
from wfexplain_dashboard.resources import attribution, attribution_panel, current, eval_data, ood_detector
from wfexplain_dashboard.text import escape_markdown
from wfexplain_dashboard.views import explain_data

PHOTO_SIDE = 256  # the photo as given is drawn (and exported) at most this many pixels on a side
# Choices below the image survive a run that stops before drawing them (an upload being replaced): a
# widget not drawn in a run loses its state, so each is re-stated at the top.
KEPT = ("explain_methods", "explain_target", "explain_target_cls", *explain_data.KEPT)
for key in KEPT:
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]
st.session_state.setdefault("explain_methods", ["Integrated Gradients", "Layer Grad-CAM"])
view = current()
model, forget = view.model, view.forget
names = list(model.class_names)
shown_names = [escape_markdown(n, 100) for n in names]  # class names are data: escaped wherever markdown shows them
forget_text = escape_markdown(", ".join(view.forget_names), 400) or "nothing"
st.title("Explain")
if not forget:
    st.info("No forget set chosen in the sidebar: the filtered model equals the original. Pick classes to compare.")
mode = st.radio("Explain", ["One image", "A class over many test images"], horizontal=True, key="explain_mode")
if mode != "One image":
    explain_data.class_mode(view)
    st.stop()

# ---------------------------------------------------------------- the image
source = st.radio("Image", ["Test gallery", "Upload"], horizontal=True, key="explain_source")
image = None
if source == "Upload":
    # gif is accepted here so that an animated one gets our message, not the uploader's bare "!" chip
    up = st.file_uploader("Upload an image", type=["png", "jpg", "jpeg", "webp", "bmp", "gif"], key="explain_upload",
                          max_upload_size=MAX_BYTES // 2**20,
                          help=f"{', '.join(FORMATS)}; any mode, up to {MAX_BYTES // 2**20} MB and {LIMIT_TEXT}, "
                               f"{SHAPE_TEXT}")
    if up is not None:
        try:
            image = read_image(up.getvalue(), up.name)
        except UploadError as e:  # its message names the file: user data, escaped
            st.error(f"Cannot use this file: {escape_markdown(str(e), 600)}")
else:
    data = eval_data(view)
    cls = st.selectbox("Class", range(len(names)), format_func=lambda i: names[i],
                       index=forget[0] if forget else 0, key="explain_class")
    candidates = np.flatnonzero(data.targets.numpy() == cls)[:12]
    pick = st.select_slider("Test image", options=list(range(len(candidates))), key="explain_pick")
    image = data.dataset.pil(int(data.indices[candidates[pick]]))

if image is None:
    st.stop()

x = model.transform(image).unsqueeze(0)
mean, std = np.array(model.info.mean), np.array(model.info.std)
seen = (x[0].permute(1, 2, 0).numpy() * std + mean).clip(0, 1)  # the model's input, back in pixel units
seen = seen.squeeze(-1) if seen.shape[-1] == 1 else seen
with st.expander("Preprocessing: what the model sees", expanded=source == "Upload"):
    p1, p2 = st.columns(2)
    w0, h0 = image.info.get("original_size", image.size)
    p1.image(image, caption=f"as given: {image.mode}, {w0}x{h0}"
             + (f" (downscaled to {image.width}x{image.height})" if (w0, h0) != image.size else ""), width=200)
    p2.image(seen, width=200, clamp=True, caption=preprocessing_text(model.info, image.size))

# ---------------------------------------------------------------- predictions
before = explain.top_k(model, x, None, k=3)[0]
after = explain.top_k(model, x, list(forget) or None, k=3)[0]
if source == "Upload":  # calibrated once per checkpoint on its own validation (or held-out training) images
    detector = ood_detector(view)
    if doubts := out_of_domain(model, x, detector):
        checks = (detector.summary[0].upper() + detector.summary[1:] if detector is not None else
                  "Only the pixel statistics were checked: the training data to calibrate the model's scores cannot "
                  "be read")
        st.warning("This image may be unlike the model's training data: " + "; ".join(doubts)
                   + f". Its predictions and explanations may mean little. ({checks}.)")
t1, t2 = st.columns(2)
t1.markdown("**Original model, top 3**")
t1.dataframe(pd.DataFrame([(names[c], f"{p:.1%}") for c, p in before], columns=["class", "probability"]),
             hide_index=True)
t2.markdown(f"**Filtered (forgetting {forget_text}), top 3**")
t2.dataframe(pd.DataFrame([(names[c], f"{p:.1%}") for c, p in after], columns=["class", "probability"]),
             hide_index=True)

# ---------------------------------------------------------------- attributions
m1, m2 = st.columns([2, 1])
methods = m1.multiselect("Captum methods", explain.METHODS, key="explain_methods",
                         help="Kept while you switch images or replace an upload")
target_mode = m2.radio("Target", ["Predicted (original)", "Predicted (filtered)", "Chosen class"], key="explain_target")
target = after[0][0] if target_mode == "Predicted (filtered)" else before[0][0]
if target_mode == "Chosen class":
    target = st.selectbox("Target class", range(len(names)), format_func=lambda i: names[i], key="explain_target_cls")
side = "×".join(map(str, model.info.input_hw))
methods, method_options, layer_sides = explain_data.method_parameters(view, methods)
gradcam_layer = method_options.gradcam_layer
st.caption(f"Attributions for target **{shown_names[target]}**. Insertion AUC ↑ (higher is better) and deletion AUC ↓ "
           "(lower is better) measure how faithful each map is (Petsiuk et al., RISE, 2018): the target's "
           "probability as the map's most important pixels are added to a black image, or removed from this one."
           + (f" {shown_names[target]} is forgotten: the filtered model gives it almost no probability whatever pixels it "
              "sees, so both of its AUCs are near 0 — the map is then not a faithful explanation of anything."
              if target in forget else ""))

x_np = x.numpy()
photo = display_copy(image, PHOTO_SIDE)  # L, RGB or RGBA: a palette, CMYK or LA upload drawn as a viewer shows it
figures_shown: dict[str, dict[str, bytes]] = {}
bar = st.progress(0.0) if methods else None
for k, method in enumerate(methods):
    layer = gradcam_layer if method == "Layer Grad-CAM" else None
    maps = []
    for j, (f, which) in enumerate((((), "original"), (forget, "filtered"))):
        if bar is not None:
            bar.progress((2 * k + j) / (2 * len(methods)),
                         text=f"{method} on the {which} model ({k + 1} of {len(methods)} methods)…")
        maps.append(attribution(view.path, x_np, int(target), method, f,
                                       tuple(method_options.for_method(method).items())))
    (a0, s0), (a1, s1) = maps
    st.markdown(f"#### {method}")
    if layer is not None:
        h, w = layer_sides.get(layer, ("?", "?"))
        st.caption(f"Grad-CAM on `{layer}` ({h}×{w} of {side} input)")
    label = f"{method} · target {names[target]} · forgetting {', '.join(view.forget_names) or 'nothing'}"
    files = attribution_panel(seen, np.asarray(photo), a0, a1, label)  # drawn once; a rerun reads it back
    figures_shown[method] = files
    st.image(files["preview"])
    st.caption("Maps are drawn over the model's input (grey): the stronger the attribution, the more opaque its "
               "colour; the photo as given is on the left.")
    st.dataframe(pd.DataFrame({
        "insertion AUC ↑": [s0["insertion_auc"], s1["insertion_auc"]],
        "deletion AUC ↓": [s0["deletion_auc"], s1["deletion_auc"]],
    }, index=["original", "filtered"]).style.format("{:.3f}"))
    for col, fmt in zip(st.columns(len(figures.FIGURE_FORMATS)), figures.FIGURE_FORMATS, strict=True):
        col.download_button(f"{method} panel .{fmt}", files[fmt],
                            export.attribution_name(view.name, method, int(target), forget, fmt), figures.FIGURE_MIME[fmt],
                            key=f"dl_{method}_{fmt}", on_click="ignore")
if bar is not None:
    bar.empty()
# For the Export page: every method's panel files drawn here, keyed by file stem (checkpoint, method, target, forget).
st.session_state["attribution_figures"] = {
    export.attribution_name(view.name, m, int(target), forget, "").removesuffix("."): f for m, f in figures_shown.items()}
