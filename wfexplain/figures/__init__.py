"""Figures: plotly builders for the dashboard (``dashboard``, ``comparison``), matplotlib builders for papers (``paper``).

This package never imports streamlit.
"""

from .common import FILTERED_COLOR, FORGOTTEN_COLOR, ORIGINAL_COLOR, to_numpy
from .comparison import B_COLOR, REFERENCE_COLOR, ab_accuracy_bars, forget_predictions_heatmap, tradeoff_scatter
from .dashboard import (
    accuracy_bars,
    component_profile_bar,
    confusion_shift,
    memory_heatmap,
    prediction_flow,
    similarity_heatmap,
    sparsity_bars,
)
from .paper import FIGURE_FORMATS, attribution_figure, figure_bytes, memory_figure

__all__ = ["B_COLOR", "FIGURE_FORMATS", "FILTERED_COLOR", "FORGOTTEN_COLOR", "ORIGINAL_COLOR", "REFERENCE_COLOR",
           "ab_accuracy_bars", "accuracy_bars", "attribution_figure", "component_profile_bar", "confusion_shift",
           "figure_bytes", "forget_predictions_heatmap", "memory_figure", "memory_heatmap", "prediction_flow",
           "similarity_heatmap", "sparsity_bars", "to_numpy", "tradeoff_scatter"]
