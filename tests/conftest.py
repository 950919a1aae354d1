"""What the whole suite shares: the environment, tiny models and data, one tiny CNN trained once per session.

Helpers are fixtures (a test names what it uses); no test file imports another. Dashboard helpers
(AppTest) are in ``tests/wfexplain_dashboard/conftest.py``, library ones in ``tests/wfexplain/conftest.py``
and ``tests/wfexplain/data/conftest.py``; the repository's root is ``tests.ROOT`` (``tests/__init__.py``).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WFEXPLAIN_PRECOMPUTE", "0")  # dashboard tests turn it on where they test it
os.environ.setdefault("WFEXPLAIN_EVAL_LIMIT", "500")  # read by wfexplain_dashboard.settings at import
if "WFEXPLAIN_CACHE_DIR" not in os.environ:  # precomputed answers never land in the repository's checkpoints
    import tempfile

    os.environ["WFEXPLAIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="wfexplain-answers-")
if "WFEXPLAIN_KEY_FILE" not in os.environ:  # the answers' signing key never lands in the user's ~/.config
    import tempfile

    os.environ["WFEXPLAIN_KEY_FILE"] = os.path.join(tempfile.mkdtemp(prefix="wfexplain-key-"), "cache.key")

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests import ROOT
from wfexplain.data import DatasetInfo
from wfexplain.filtering import FilteredModel

torch.set_num_threads(2)


def tiny_info(num_classes: int = 5, in_chans: int = 1, img_size: int = 16) -> DatasetInfo:
    return DatasetInfo("tiny", tuple(f"class{i}" for i in range(num_classes)), in_chans, img_size,
                       (0.5,) * in_chans, (0.5,) * in_chans)


def randomized(backbone: str, seed: int = 0, **kw) -> FilteredModel:
    """A filtered model with random weights, random BN statistics and random alphas."""
    torch.manual_seed(seed)
    model = FilteredModel(backbone, tiny_info(**kw))
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
        for a in model.alphas.values():
            a.uniform_(0, 1)
    return model.eval()


def make_bar_folder(root: Path, n_train: int = 32, n_test: int = 8) -> None:
    """An image folder of 3 learnable classes (a bright bar at a class-specific row), 16x16 grayscale."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(("top", "middle", "bottom")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(n):
                img = rng.integers(0, 80, size=(16, 16), dtype=np.uint8)
                img[2 + 5 * c: 5 + 5 * c] = 230
                Image.fromarray(img, "L").save(folder / f"{k}.png")


@pytest.fixture(name="tiny_info", scope="session")
def tiny_info_fixture():
    """``tiny_info(num_classes=5, in_chans=1, img_size=16)``: a DatasetInfo with class names class0, class1, ..."""
    return tiny_info


@pytest.fixture(scope="session")
def make_model():
    """``make_model(backbone, seed=0, **tiny_info kwargs)``: a FilteredModel with random weights, BN statistics and alphas."""
    return randomized


@pytest.fixture(name="make_bar_folder", scope="session")
def make_bar_folder_fixture():
    """``make_bar_folder(root, n_train=32, n_test=8)``: writes 3 learnable classes of 16x16 grayscale PNGs under root."""
    return make_bar_folder


# The shared tiny model: the recipe most tests trained on their own, once per session.
BARS_TRAIN, BARS_TEST = 24, 8  # images per class
BARS_RECIPE = {"epochs": 2, "batch_size": 16, "shift": 0.0}


@pytest.fixture(scope="session")
def bar_data(tmp_path_factory) -> Path:
    """The image folder ``trained_bars`` learned (24 train and 8 test images of each of 3 classes). Read-only."""
    data = tmp_path_factory.mktemp("bars") / "data"
    make_bar_folder(data, n_train=BARS_TRAIN, n_test=BARS_TEST)
    return data


@pytest.fixture(scope="session")
def trained_bars(bar_data) -> Path:
    """A tiny CNN trained once per session on ``bar_data`` (imagefolder, img_size 16,
    ``TrainConfig(epochs=2, batch_size=16, shift=0.0)``, the default 10% validation split; all-ones memory).

    Read-only: a test that writes to it takes ``trained_checkpoint`` (its own copy) instead, or copies it.
    The manifest records ``bar_data`` as its data directory.
    """
    from wfexplain.engine import TrainConfig
    from wfexplain.pipeline import train_checkpoint

    out = bar_data.parent / "ck"
    train_checkpoint("imagefolder", "cnn", out, TrainConfig(**BARS_RECIPE), data_dir=str(bar_data), img_size=16)
    return out


@pytest.fixture
def trained_checkpoint(trained_bars, tmp_path) -> Path:
    """This test's own copy of ``trained_bars`` (``tmp_path / "trained"``): write to it freely."""
    return Path(shutil.copytree(trained_bars, tmp_path / "trained"))


# ---------------------------------------------------------------- a hand-made benchmark (the Compare page's tables)

BENCH_METHODS = ("original", "retrain", "wf", "finetune", "neggrad_plus", "random_labels", "salun", "ssd")


def ms(mean, std=0.0) -> dict:
    return {"mean": mean, "std": std}


def hand_metrics(method: str, shift: float = 0.0) -> dict:
    """Metrics with a known best per column among the non-reference methods."""
    fa = {"original": 0.99, "retrain": 0.0, "wf": 0.01, "finetune": 0.30, "neggrad_plus": 0.05, "random_labels": 0.02,
          "salun": 0.03, "ssd": 0.20}[method]
    ra = {"original": 0.99, "retrain": 0.98, "wf": 0.97, "finetune": 0.975, "neggrad_plus": 0.90, "random_labels": 0.93,
          "salun": 0.96, "ssd": 0.94}[method]
    secs = {"retrain": 100.0, "wf": 20.0, "finetune": 10.0, "neggrad_plus": 16.0, "random_labels": 15.0, "salun": 30.0,
            "ssd": 5.0}.get(method)
    out = {"forget_accuracy_test": ms(fa + shift, 0.01), "retain_accuracy_test": ms(ra - shift, 0.002),
           "forget_accuracy_train": ms(fa, 0.01), "retain_accuracy_train": ms(ra, 0.0),
           "mia_efficacy": ms(1 - fa, 0.05), "zrf": ms(0.9 if method == "salun" else 0.5, 0.01),
           "relearn_steps": ms({"wf": 40.0, "retrain": 60.0}.get(method, 10.0), 2.0),
           "probe_accuracy": ms(fa + 0.1, 0.02)}
    if secs is not None:  # "original" has no time
        out["seconds"] = ms(secs, 1.0)
    return out


def make_bench(classes=(3, 5), methods=BENCH_METHODS) -> dict:
    """A benchmark.json of hand-made numbers (known best per column) for the classes of ten digits named 0..9."""
    per_class = {}
    for c in classes:
        per_class[str(c)] = {}
        for m in methods:
            acc = [0.98] * 10
            acc[c] = hand_metrics(m)["forget_accuracy_test"]["mean"]
            preds = [0.0] * 10
            if m == "original":
                preds[c] = 1.0
            else:
                preds[(c + 1) % 10], preds[(c + 2) % 10] = 0.7, 0.3
            per_class[str(c)][m] = {"metrics": hand_metrics(m, 0.001 * c), "per_class_accuracy": acc,
                                    "forget_predictions": preds}
    return {
        "checkpoint": "x", "dataset": "mnist", "backbone": "cnn", "class_names": [str(i) for i in range(10)],
        "forget_classes": list(classes),
        "seeds": 2, "num_test_images": 1000, "created": "2025-01-01T00:00:00+00:00", "command": "wfexplain benchmark",
        "methods": {m: hand_metrics(m) for m in methods}, "per_class": per_class,
        "cost": {"wf_all_classes_seconds": 20.0, "retrain_one_class_seconds": 100.0, "ratio": 0.2,
                 "one_class_seconds": {m: hand_metrics(m)["seconds"]["mean"] for m in methods if m != "original"}},
        "config": {"wf": {"steps": 2000}, "finetune": {"epochs": 5}},
    }


@pytest.fixture(name="make_bench", scope="session")
def make_bench_fixture():
    """``make_bench(classes=(3, 5), methods=all eight)``: a benchmark.json (dict) of hand-made numbers, a known best
    per column among the unlearning methods, for a checkpoint of the ten digit classes."""
    return make_bench


# ---------------------------------------------------------------- start-up cost (fresh interpreters)

HEAVY = ("captum", "matplotlib", "plotly", "scipy", "sklearn", "timm", "torchvision")


def imported_after(code: str, roots: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules of ``roots`` that are in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {set(roots)!r})))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)  # a fresh interpreter imports torch on a busy CPU
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(name="imported_after", scope="session")
def imported_after_fixture():
    """``imported_after(code, roots=HEAVY)``: the modules of ``roots`` (top-level names) in ``sys.modules`` after
    running ``code`` in a fresh interpreter started in the repository."""
    return imported_after
