"""Explanations: Captum attributions and Grad-CAM of original vs filtered models, memory analyses, uploads.

``attributions`` (Captum methods, insertion/deletion), ``over_data`` (a class's test images explained before and
after forgetting, averaged), ``gradcam``, ``analysis`` (what the memory
matrices say), ``uploads`` (validated user images). The attribution names below load Captum on
first use only.
"""

_LAZY = {"METHODS": "attributions", "attribute": "attributions", "black_baseline": "attributions",
         "insertion_deletion": "attributions",
         "list_methods": "attributions", "top_k": "attributions", "default_gradcam_layer": "gradcam",
         "gradcam_layers": "gradcam", "MethodOptions": "over_data", "class_attributions": "over_data",
         "to_npy": "over_data"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'wfexplain.explain' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
