"""The wfexplain dashboard: the only Streamlit-aware code (cached resources, session state, the sidebar, the pages).

Start it with ``wfexplain dashboard`` (or ``python -m wfexplain_dashboard``, or ``streamlit run app.py`` in a
checkout). Importing this package imports nothing: its modules load Streamlit and torch when used.
"""
