"""The Explain page's method parameters (both modes) and its data mode: one class's test images explained before and
after forgetting, averaged (views/explain.py draws them). The computation is :mod:`wfexplain.explain.over_data`."""

import pandas as pd
import streamlit as st

from wfexplain import explain, figures
from wfexplain.explain import over_data
from wfexplain_dashboard.resources import View, class_attributions, eval_data
from wfexplain_dashboard.text import escape_markdown

DATA_TARGETS = {"True class": "true", "Predicted (original)": "original", "Predicted (filtered)": "filtered"}
TARGET_TEXT = {"true": "true class", "original": "class predicted by the original model",
               "filtered": "class predicted by the filtered model"}
MAX_IMAGES, DEFAULT_IMAGES = 64, 16
# Widgets of the data mode and the parameters: re-stated by the page so a run that stops before them keeps them.
KEPT = ("explain_data_class", "explain_data_n", "explain_data_target", "explain_ig_steps", "explain_shap_samples",
        "explain_occlusion_window")


def method_parameters(view: View, methods: list[str]) -> tuple[list[str], over_data.MethodOptions, dict]:
    """The chosen methods' parameters in an expander. Returns the methods that can run (Layer Grad-CAM dropped, with
    a warning, on a model without a usable layer), their :class:`~wfexplain.explain.over_data.MethodOptions`, and
    the Grad-CAM layers' output sides ``{path: (h, w)}``."""
    model, h = view.model, view.model.info.input_hw[0]
    layer_sides: dict = {}
    default_layer = None
    if "Layer Grad-CAM" in methods:
        try:  # probed once per model on a private copy; the shared model never gets a hook
            layer_sides = dict(explain.gradcam_layers(model))
            default_layer = explain.default_gradcam_layer(model)
        except ValueError as e:
            st.warning(f"Layer Grad-CAM is not available for this model: {escape_markdown(str(e), 400)}")
            methods = [m for m in methods if m != "Layer Grad-CAM"]
    steps = samples = window = layer = None
    for key, value in (("explain_ig_steps", 32), ("explain_shap_samples", 16),
                       ("explain_occlusion_window", max(1, round(h / 7)))):  # attribute()'s defaults
        st.session_state.setdefault(key, value)  # set here, not as widget defaults: the page re-states them
    with st.expander("Method parameters", expanded=False):
        if not methods:
            st.caption("Choose a method to set its parameters.")
        if "Integrated Gradients" in methods:
            steps = st.number_input("Integrated Gradients: steps", 2, 256, key="explain_ig_steps",
                                    help="Points of the Gauss-Legendre path integral from the black image: more is "
                                         "more exact (the map sums closer to the logit's change) and slower")
        if "Gradient SHAP" in methods:
            samples = st.number_input("Gradient SHAP: samples", 1, 256, key="explain_shap_samples",
                                      help="Random baselines and path points averaged per image: more is smoother "
                                           "and slower")
        if "Occlusion" in methods:
            window = st.number_input("Occlusion: window (pixels)", 1, h, key="explain_occlusion_window",
                                     help="Side of the black square slid over the image (stride: half of it)")
        if default_layer is not None:
            options = list(layer_sides) if default_layer in layer_sides else [default_layer, *layer_sides]

            def _layer_label(path: str) -> str:
                lh, lw = layer_sides.get(path, ("?", "?"))
                return f"{path} ({lh}×{lw})" + (" — default" if path == default_layer else "")

            layer = st.selectbox(
                "Grad-CAM layer", options, index=options.index(default_layer), format_func=_layer_label,
                key=f"explain_gradcam_layer:{view.name}",
                help="Backbone module whose activations Grad-CAM weights by their gradients, in execution order "
                     "with its output resolution: deeper layers are more class-specific, earlier ones finer-grained.")
    opts = over_data.MethodOptions(ig_steps=None if steps is None else int(steps),
                                   shap_samples=None if samples is None else int(samples),
                                   occlusion_window=None if window is None else int(window), gradcam_layer=layer)
    return methods, opts, layer_sides


def class_mode(view: View) -> None:
    """A class over its first N test images of the evaluation subset: mean maps, mean ± std AUCs, downloads."""
    model, forget = view.model, view.forget
    names = list(model.class_names)
    shown = [escape_markdown(n, 100) for n in names]  # class names are data: escaped wherever markdown shows them
    forget_text = escape_markdown(", ".join(view.forget_names), 400) or "nothing"
    data = eval_data(view)
    labels = data.targets.numpy()
    c1, c2 = st.columns([2, 1])
    st.session_state.setdefault("explain_data_class", forget[0] if forget else 0)
    cls = c1.selectbox("Class", range(len(names)), format_func=lambda i: names[i], key="explain_data_class")
    ids = data.indices.numpy()[labels == cls]
    if not len(ids):
        st.info(f"The evaluation subset holds no test image of **{shown[cls]}**.")
        st.stop()
    cap = min(MAX_IMAGES, len(ids))
    st.session_state["explain_data_n"] = min(st.session_state.get("explain_data_n", DEFAULT_IMAGES), cap)
    n = int(c2.number_input("Test images", 1, cap, key="explain_data_n",
                            help=f"The first N of the class's {len(ids)} images in the evaluation subset"))
    ids = ids[:n]
    m1, m2 = st.columns([2, 1])
    methods = m1.multiselect("Captum methods", explain.METHODS, key="explain_methods",
                             help="Each method is computed once per class, number of images, parameters, forget set "
                                  "and target: adding one computes only that one")
    target_label = m2.radio("Target", list(DATA_TARGETS), key="explain_data_target",
                            help="The class explained in each image, the same for both models")
    target = DATA_TARGETS[target_label]
    methods, options, _ = method_parameters(view, methods)
    st.caption(f"Mean attribution maps over the first {n} test images of **{shown[cls]}** (test-split ids "
               f"{', '.join(map(str, ids[:8]))}{', …' if n > 8 else ''}), each explained for its "
               f"{TARGET_TEXT[target]}, under the original model and the filtered one (forgetting {forget_text}), "
               "drawn over the mean input. Insertion AUC ↑ and deletion AUC ↓ (Petsiuk et al., RISE, 2018) are the "
               "mean ± sample standard deviation over the images.")
    for method in methods:
        bar = st.progress(0.0, text=f"{method}…")

        def report(done: int, total: int, bar=bar, method=method) -> None:
            bar.progress(done / total, text=f"{method}: {done} of {total} images (original and filtered model)…")

        result = class_attributions(view, cls, n, method, tuple(options.for_method(method).items()), forget, target,
                                    progress=report)
        bar.empty()
        st.markdown(f"#### {method}")
        title = (f"{method} · mean of {n} × {names[cls]} · target: {target_label.lower()} · forgetting "
                 f"{', '.join(view.forget_names) or 'nothing'}")
        fig = figures.attribution_figure(result["mean_image"], {"mean original": result["mean_original"],
                                                                "mean filtered": result["mean_filtered"]},
                                         title=title, difference=result["mean_filtered"] - result["mean_original"],
                                         difference_title="filtered − original")
        st.image(figures.figure_bytes(fig, "png", dpi=110))
        st.dataframe(pd.DataFrame.from_dict(over_data.summary_rows(result), orient="index"))
        st.caption(f"{n} images in {result['seconds']:.1f} s (computed once, then cached).")
        d1, d2 = st.columns(2)
        d1.download_button("Attributions .npy", over_data.to_npy(result),
                           over_data.file_name(view.name, method, cls, n, target, forget, "npy"),
                           "application/octet-stream", key=f"dl_data_{method}_npy", on_click="ignore",
                           help="One NumPy structured array, a row per image: id (test split), label, target, the "
                                "original and filtered maps and the four AUCs; np.load(f, allow_pickle=False)")
        d2.download_button("Per-image scores .csv", over_data.scores_csv(result),
                           over_data.file_name(view.name, method, cls, n, target, forget, "csv"), "text/csv",
                           key=f"dl_data_{method}_csv", on_click="ignore")
