"""wfexplain dashboard: forget any classes live and see which weights carry each class.

Run with ``streamlit run app.py``. This file is the router and frame; pages are thin views.
"""

import streamlit as st

from wfexplain.ui import render_sidebar

st.set_page_config(page_title="wfexplain", page_icon=":material/filter_alt:", layout="wide")

PAGES = [
    st.Page("pages/models.py", title="Models", icon=":material/model_training:", url_path="models"),
    st.Page("pages/forget.py", title="Forget", icon=":material/visibility_off:", url_path="forget", default=True),
    st.Page("pages/memory.py", title="Memory matrices", icon=":material/grid_on:", url_path="memory"),
    st.Page("pages/explain.py", title="Explain", icon=":material/image_search:", url_path="explain"),
    st.Page("pages/export.py", title="Export", icon=":material/download:", url_path="export"),
]

page = st.navigation(PAGES)
render_sidebar()
page.run()
