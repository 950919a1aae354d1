"""wfexplain dashboard: forget any classes live and see which weights carry each class.

Run with ``streamlit run app.py``. This file is the router and frame; pages are thin views
in ``views/``. (Not ``pages/``: with a ``pages/`` folder next to the entrypoint, Streamlit
runs a URL like ``/export`` as a bare v1 page, skipping this file and its sidebar, until
the first run of this file.) The default page, Forget, is served at ``/``.
"""

import streamlit as st

from dashboard import page_notice, render_sidebar

st.set_page_config(page_title="wfexplain", page_icon=":material/filter_alt:", layout="wide")

PAGES = [
    st.Page("views/models.py", title="Models", icon=":material/model_training:", url_path="models"),
    st.Page("views/forget.py", title="Forget", icon=":material/visibility_off:", url_path="forget", default=True),
    st.Page("views/memory.py", title="Memory matrices", icon=":material/grid_on:", url_path="memory"),
    st.Page("views/explain.py", title="Explain", icon=":material/image_search:", url_path="explain"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("views/export.py", title="Export", icon=":material/download:", url_path="export"),
]

page = st.navigation(PAGES)
render_sidebar(page.url_path)
page_notice(PAGES, page)
page.run()
