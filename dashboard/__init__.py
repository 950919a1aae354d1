"""The only Streamlit-aware code of wfexplain: cached resources, session state, the sidebar."""

from .resources import View, current
from .sidebar import render_sidebar

__all__ = ["View", "current", "render_sidebar"]
