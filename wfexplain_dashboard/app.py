"""wfexplain dashboard: forget any classes live and see which weights carry each class.

Run with ``wfexplain dashboard`` (or ``streamlit run app.py`` in a checkout). This file is the router and
frame; pages are thin views in ``views/``. (Not ``pages/``: with a ``pages/`` folder next to the entrypoint, Streamlit
runs a URL like ``/export`` as a bare v1 page, skipping this file and its sidebar, until
the first run of this file.) The default page, Forget, is served at ``/`` and at ``/forget``
(:func:`wfexplain_dashboard.sidebar.app_pages` says how).
"""

import time

import streamlit as st

from wfexplain_dashboard.sidebar import app_pages, page_notice, render_sidebar

st.session_state["_run_started"] = time.perf_counter()  # pages report what the user waited from here
st.set_page_config(page_title="wfexplain", page_icon=":material/filter_alt:", layout="wide")

PAGES = app_pages()

page = st.navigation(PAGES)
render_sidebar(page.url_path)
page_notice(PAGES, page)
page.run()
