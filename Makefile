# Self-bootstrapping targets: each installs what is missing, then does its job.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup data browser latex photos test test-fast lint typecheck run checkpoints

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "no python3 found: install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "wfexplain needs Python 3.11 (set PYTHON=...)")'
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || scripts/ensure_venv.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

data:
	@scripts/ensure_data.sh

browser:
	@scripts/ensure_browser.sh

latex:
	@scripts/ensure_latex.sh

photos: $(STAMP)
	@PYTHON=$(BIN)/python scripts/ensure_photos.sh

setup: data $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: setup browser latex photos lint typecheck
	HF_HUB_OFFLINE=1 $(BIN)/pytest

# The lane to run while working (about a minute): ruff, then every test not marked slow (docs/development.md#tests).
test-fast: setup lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -m "not slow"

run: setup
	$(BIN)/python -m wfexplain_dashboard

# Re-create the shipped checkpoints (long: see README for measured times).
checkpoints: setup
	bash scripts/train_checkpoints.sh
