"""The test suite; its folders mirror the packages (wfexplain/, wfexplain_dashboard/) plus project/ (repository-wide rules)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository's root folder (this file is tests/__init__.py)
