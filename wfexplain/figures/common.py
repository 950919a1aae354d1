"""What every figure builder shares: array conversion, class-name checks and escaping, and the colours of the three models."""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence

import numpy as np
import torch

FORGOTTEN_COLOR = "#d62728"
ORIGINAL_COLOR = "#7f7f7f"
FILTERED_COLOR = "#1f77b4"
KEPT_COLOR = "#f0f0f0"
# Memory matrices use one colour map everywhere: the dashboard's heatmap (plotly) and the paper figures (matplotlib)
MEMORY_COLORSCALE, MEMORY_CMAP = "Viridis", "viridis"


def to_numpy(x) -> np.ndarray:
    """A NumPy view/copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def plotly_text(text) -> str:
    """``text`` (a class name, method or any other data) made literal for plotly: ``&``, ``<`` and ``>`` escaped.

    Plotly draws a subset of HTML in titles, axis tick labels, legend entries, hover labels, Sankey node
    labels and annotations (``<a href>``, ``<b>``, ``<br>``, ``<span style>``): a class named
    ``<a href="http://evil">x</a>`` would become a live link. :func:`html.escape` turns the markup into
    entities, which plotly decodes back, so the name is drawn exactly as written and nothing in it acts. Quotes
    are kept: with no ``<`` left there is no tag, hence no attribute for a quote to end.
    This is the one place plotly text is escaped; every plotly builder passes data through it.
    """
    return html.escape(str(text), quote=False)


def wrapped_title(text: str, width: int = 55) -> dict:
    """A plotly title of plain ``text`` (escaped with :func:`plotly_text`), broken into lines of at most
    ``width`` characters, with the top margin it needs.

    Plotly never wraps a title: a long one is cut off at the figure's edge (in a half-width column
    most of it). Pass the result to ``fig.update_layout(**wrapped_title(...))``.
    """
    lines = textwrap.wrap(str(text), width, break_long_words=False, break_on_hyphens=False)
    return {"title": dict(text="<br>".join(map(plotly_text, lines)), x=0, xanchor="left", font=dict(size=14)),
            "margin": dict(t=30 + 20 * len(lines))}



def _check_names(class_names: Sequence[str], n: int, what: str) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"{what} has {n} classes but {len(names)} class names were given")
    return names


def _plotly_names(class_names: Sequence[str], n: int, what: str) -> list[str]:
    """:func:`_check_names`, each name escaped for plotly (:func:`plotly_text`)."""
    return [plotly_text(c) for c in _check_names(class_names, n, what)]

