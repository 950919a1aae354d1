"""The package's version: its one home (``pyproject.toml`` states the same; ``tests/project/test_architecture.py`` checks)."""

__version__ = "0.1.0"
