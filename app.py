"""``streamlit run app.py`` in a checkout: the dashboard of ``wfexplain_dashboard/app.py`` (``wfexplain dashboard``
starts the same, installed or not)."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent / "wfexplain_dashboard" / "app.py"), run_name="__main__")
