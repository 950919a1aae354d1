"""The only Streamlit-aware code of wfexplain: cached resources, session state, the sidebar."""

from .resources import View, current
from .sidebar import page_notice, render_sidebar

__all__ = ["View", "current", "page_notice", "render_sidebar"]
