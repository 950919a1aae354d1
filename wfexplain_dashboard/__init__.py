"""The wfexplain dashboard: the only Streamlit-aware code (cached resources, session state, the sidebar, the pages).

Start it with ``wfexplain dashboard`` (or ``python -m wfexplain_dashboard``, or ``streamlit run app.py`` in a
checkout). Importing this package imports nothing: its modules load Streamlit and torch when used.
"""

import os

# OpenMP threads that wait by sleeping, not spinning: a dashboard shares its cores with its own background precompute
# and whatever else the server runs, and spinning made the small CNN's fast path 2-2.9x slower under load (840-879 ms
# against 305-444 ms passive, at load 4.5; issue "Live everywhere"). Set before torch loads its OpenMP runtime (every
# server process imports this package first); a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
