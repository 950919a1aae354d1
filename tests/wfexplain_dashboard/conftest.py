"""The dashboard's test helpers: the app headless through Streamlit's AppTest, on the shipped fmnist-cnn.

AppTest runs ``app.py`` (router + sidebar) in the test process; models and data are shared through
``st.cache_resource``, so only the first test of a session pays for loading them.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests import ROOT

APP = str(ROOT / "wfexplain_dashboard" / "app.py")
SHIPPED = ROOT / "checkpoints" / "fmnist-cnn"  # the default checkpoint the app opens
TIMEOUT = 180  # seconds per script run: the first one loads torch models and data on a busy CPU


def open_app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page is not None:
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def start_job(at: AppTest, name: str) -> None:
    """Fill the Models page's checkpoint name and press Start."""
    next(t for t in at.main.text_input if t.label == "Checkpoint name").input(name)
    next(b for b in at.main.button if b.label == "Start").click().run()
    assert_clean(at)


def copy_checkpoint(dest: Path) -> Path:
    """The files of shipped fmnist-cnn that loading needs (not its benchmark runs)."""
    dest.mkdir(parents=True)
    for f in ("manifest.json", "model.safetensors", "memory.safetensors"):
        shutil.copy2(SHIPPED / f, dest / f)
    return dest


@pytest.fixture(scope="session")
def app_path() -> str:
    """``wfexplain_dashboard/app.py``, for ``AppTest.from_file``."""
    return APP


@pytest.fixture(scope="session")
def shipped_checkpoint() -> Path:
    """The shipped ``checkpoints/fmnist-cnn`` the app opens by default (skips the test when it is missing). Read-only."""
    if not (SHIPPED / "manifest.json").is_file():
        pytest.skip("checkpoints/fmnist-cnn is missing")
    return SHIPPED


@pytest.fixture(name="open_app", scope="session")
def open_app_fixture(shipped_checkpoint):
    """``open_app(page=None, **query)``: the app run once through AppTest with these URL query parameters, then
    switched to ``page`` (e.g. ``"views/models.py"``) when given."""
    return open_app


@pytest.fixture(name="assert_clean", scope="session")
def assert_clean_fixture():
    """``assert_clean(at)``: the last run raised nothing."""
    return assert_clean


@pytest.fixture(name="start_job", scope="session")
def start_job_fixture():
    """``start_job(at, name)``: fill the Models page's checkpoint name and press Start (the run must be clean)."""
    return start_job


@pytest.fixture(name="copy_checkpoint", scope="session")
def copy_checkpoint_fixture(shipped_checkpoint):
    """``copy_checkpoint(dest)``: the files of shipped fmnist-cnn that loading needs, copied to a new ``dest``."""
    return copy_checkpoint


# ---------------------------------------------------------------- a checkpoint whose class names are hostile

# Image folder names cannot hold "/", so these are the hostile names a dataset folder can have.
FOLDER_NAMES = ["[text](http:evil.example)", "<a href='https:evil.example'>x", "=2+5", "-1+cmd|' C calc'!A0",
                "**bold** _it_ `code` $x^2$", ":red[alert]", "![img](http:evil.example)", "<b>bold<b>", "@SUM(1+1)",
                "# heading"]


@pytest.fixture
def hostile_checkpoint(tmp_path, copy_checkpoint):
    """fmnist-cnn's weights, relabelled: an image folder whose 10 class folders have hostile names, 2 test images each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in FOLDER_NAMES:
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (28, 28), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / name / f"{i}.png")
    dest = copy_checkpoint(tmp_path / "user" / "evil")
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["dataset"].update(name="imagefolder", class_names=sorted(FOLDER_NAMES), mean=[0.5], std=[0.5])
    manifest["data_dir"] = str(tmp_path / "data")
    manifest["backbone_description"] = "see [docs](http://evil.example) <a href='x'>y</a>"
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest
