"""Figures: plotly builders for the dashboard (``dashboard``, ``comparison``), matplotlib builders for papers (``paper``).

This package never imports streamlit. Importing it imports neither plotly nor matplotlib: each
builder below loads its module (``dashboard``/``comparison``: plotly; ``paper``: matplotlib, scipy)
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .common import FILTERED_COLOR, FORGOTTEN_COLOR, ORIGINAL_COLOR, to_numpy

if TYPE_CHECKING:
    from .comparison import B_COLOR, REFERENCE_COLOR, ab_accuracy_bars, forget_predictions_heatmap, tradeoff_scatter
    from .dashboard import (
        accuracy_bars,
        component_profile_bar,
        confusion_shift,
        history_curves,
        memory_heatmap,
        prediction_flow,
        set_components_bars,
        set_memory_heatmap,
        similarity_heatmap,
        sparsity_heatmap,
    )
    from .deletion import deletion_aucs, deletion_figure, deletion_table, deletion_verdict
    from .paper import FIGURE_FORMATS, FIGURE_MIME, attribution_figure, figure_bytes, memory_figure

_LAZY = {
    **dict.fromkeys(["B_COLOR", "REFERENCE_COLOR", "ab_accuracy_bars", "forget_predictions_heatmap", "tradeoff_scatter"],
                    "comparison"),
    **dict.fromkeys(["accuracy_bars", "component_profile_bar", "confusion_shift", "history_curves", "memory_heatmap",
                     "prediction_flow", "set_components_bars", "set_memory_heatmap", "similarity_heatmap",
                     "sparsity_heatmap"], "dashboard"),
    **dict.fromkeys(["deletion_aucs", "deletion_figure", "deletion_table", "deletion_verdict"], "deletion"),
    **dict.fromkeys(["FIGURE_FORMATS", "FIGURE_MIME", "attribution_figure", "figure_bytes", "memory_figure"], "paper"),
}

__all__ = ["B_COLOR", "FIGURE_FORMATS", "FIGURE_MIME", "FILTERED_COLOR", "FORGOTTEN_COLOR", "ORIGINAL_COLOR", "REFERENCE_COLOR",
           "ab_accuracy_bars", "accuracy_bars", "attribution_figure", "component_profile_bar", "confusion_shift",
           "deletion_aucs", "deletion_figure", "deletion_table", "deletion_verdict",
           "figure_bytes", "forget_predictions_heatmap", "history_curves", "memory_figure", "memory_heatmap", "prediction_flow",
           "set_components_bars", "set_memory_heatmap", "similarity_heatmap", "sparsity_heatmap", "to_numpy",
           "tradeoff_scatter"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
