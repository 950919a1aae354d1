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
BENCH_ROUND = 18.0  # WF's one round for every class (its one-class time, 20 s, is the round plus 2 s of baking)
BENCH_REQUESTS = {"1": 10, "2": 45, "3": 20}


def ms(mean, std=0.0) -> dict:
    return {"mean": mean, "std": std, "n": 2}


# method -> value of each metric with a known best (closest to Retrain) among the non-reference methods:
# forget acc. wf, zrf_paper a five-way tie at Retrain's 0.5 (SalUn's higher 0.9 is not best), zrf_code wf, retain acc.
# finetune, MIA wf, attack AUC wf, attack TPR random_labels, relearn (1e-3) wf, relearn (1e-4) neggrad_plus, probe wf,
# forget loss neggrad_plus, time ssd (the fastest; "original" has no time).
HAND = {
    "forget": {"original": 0.99, "retrain": 0.0, "wf": 0.01, "finetune": 0.30, "neggrad_plus": 0.05,
               "random_labels": 0.02, "salun": 0.03, "ssd": 0.20},
    "retain": {"original": 0.99, "retrain": 0.98, "wf": 0.97, "finetune": 0.975, "neggrad_plus": 0.90,
               "random_labels": 0.93, "salun": 0.96, "ssd": 0.94},
    "zrf_code": {"original": 0.3, "retrain": 0.8, "wf": 0.78, "finetune": 0.6, "neggrad_plus": 0.7,
                 "random_labels": 0.65, "salun": 0.9, "ssd": 0.5},
    "attack_auc": {"original": 0.95, "retrain": 0.5, "wf": 0.52, "finetune": 0.7, "neggrad_plus": 0.6,
                   "random_labels": 0.55, "salun": 0.58, "ssd": 0.65},
    "attack_tpr_at_1fpr": {"original": 0.9, "retrain": 0.01, "wf": 0.02, "finetune": 0.2, "neggrad_plus": 0.05,
                           "random_labels": 0.015, "salun": 0.03, "ssd": 0.1},
    "relearn_steps_lr1e4": {"original": 5.0, "retrain": 120.0, "wf": 100.0, "neggrad_plus": 130.0},
    "forget_loss_train": {"original": 0.05, "retrain": 8.0, "wf": 6.0, "finetune": 1.0, "neggrad_plus": 9.0,
                          "random_labels": 5.0, "salun": 4.0, "ssd": 3.0},
    "seconds": {"retrain": 100.0, "wf": 20.0, "finetune": 10.0, "neggrad_plus": 16.0, "random_labels": 15.0,
                "salun": 30.0, "ssd": 5.0},
}
GRIDS = {"wf": {"steps": [468, 936]}, "finetune": {"lr": [0.01, 0.05]}, "neggrad_plus": {"lr": [0.005, 0.01]},
         "random_labels": {"lr": [0.005, 0.01]}, "salun": {"lr": [0.005, 0.01]}, "ssd": {"alpha": [6.0, 10.0]}}


def hand_metrics(method: str, shift: float = 0.0) -> dict:
    """Every metric of the catalogue, with a known best per column among the non-reference methods (see HAND)."""
    fa, ra = HAND["forget"][method], HAND["retain"][method]
    out = {"forget_accuracy_test": ms(fa + shift, 0.01), "forget_accuracy_train": ms(fa, 0.01),
           "zrf_paper": ms(0.9 if method == "salun" else 0.5, 0.01), "zrf_code": ms(HAND["zrf_code"][method], 0.01),
           "retain_accuracy_test": ms(ra - shift, 0.002), "retain_accuracy_train": ms(ra, 0.0),
           "mia_efficacy_salun": ms(1 - fa, 0.05), "attack_auc": ms(HAND["attack_auc"][method], 0.01),
           "attack_tpr_at_1fpr": ms(HAND["attack_tpr_at_1fpr"][method], 0.005),
           "relearn_steps_lr1e3": ms({"wf": 40.0, "retrain": 60.0}.get(method, 10.0), 2.0),
           "relearn_steps_lr1e4": ms(HAND["relearn_steps_lr1e4"].get(method, 20.0), 2.0),
           "probe_accuracy": ms(fa + 0.1, 0.02), "forget_loss_train": ms(HAND["forget_loss_train"][method], 0.1)}
    # "original" has no time: NaN, which a benchmark.json read back from disk holds as null
    out["seconds"] = ms(HAND["seconds"][method], 1.0) if method in HAND["seconds"] else {"mean": None, "std": None,
                                                                                          "n": 0}
    return out


def set_results(s: tuple[int, ...], methods) -> dict:
    """``per_set[key]``: each method's metrics (shifted by 0.001 x the sum of the classes), per-class accuracies (the
    set's classes at the forget accuracy) and predictions on the set's first class."""
    out = {}
    for m in methods:
        acc = [0.98] * 10
        preds = [0.0] * 10
        for c in s:
            acc[c] = HAND["forget"][m]
        if m == "original":
            preds[s[0]] = 1.0
        else:
            preds[(s[0] + 1) % 10], preds[(s[0] + 2) % 10] = 0.7, 0.3
        out[m] = {"metrics": hand_metrics(m, 0.001 * sum(s)), "per_class_accuracy": acc, "forget_predictions": preds}
    return out


def hand_tuning(keys, methods) -> dict:
    """``tuning``: two grid points per tuned method and set; the chosen one (WF's first, the others' second) is 0.02
    from Retrain on validation, the other 0.3."""
    tuned = [m for m in methods if m in GRIDS]
    points, chosen = {}, {}
    for m in tuned:
        (field, values), = GRIDS[m].items()
        pick = 0 if m == "wf" else 1
        points[m] = {k: [{"config": {field: v}, "forget": 0.01 if i == pick else 0.4, "retain": 0.97,
                          "seconds": 3.0, "distance": 0.02 if i == pick else 0.3} for i, v in enumerate(values)]
                     for k in keys}
        chosen[m] = {k: {field: values[pick]} for k in keys}
    return {"rule": "per forget set, the grid point closest to Retrain's validation accuracies (hand-made)", "seed": 0,
            "validation_images": 600, "budget": {m: 2 for m in tuned}, "grids": {m: GRIDS[m] for m in tuned},
            "base": {m: {} for m in tuned}, "retrain": {k: {"forget": 0.0, "retain": 0.98} for k in keys},
            "points": points, "chosen": chosen, "seconds": {m: 6.0 * len(keys) for m in tuned}}


def hand_parity(methods) -> dict:
    """``cost.parity`` as :func:`wfexplain.benchmark.aggregate.cost_at_parity` computes it: sizes 1 and 2 measured,
    3 extrapolated from one class; WF pays BENCH_ROUND once, then 2 s per request."""
    per = {m: HAND["seconds"][m] - (BENCH_ROUND if m == "wf" else 0.0) for m in methods if m != "original"}
    sizes = {m: {s: {"seconds": k * per[m], "extrapolated": s == "3"} for s, k in BENCH_REQUESTS.items()} for m in per}
    totals = {m: (BENCH_ROUND if m == "wf" else 0.0) + sum(v["seconds"] for v in sizes[m].values()) for m in per}
    return {"requests": dict(BENCH_REQUESTS), "wf_round_seconds": BENCH_ROUND, "methods": sizes, "totals": totals}


def make_bench(classes=(3, 5), combos=((3, 5), (1, 4)), methods=BENCH_METHODS) -> dict:
    """A benchmark.json of hand-made numbers (known best per column) for the classes of ten digits named 0..9: the
    single ``classes``, then the sets of ``combos`` (pairs: ``by_size["2"]``), tuned on validation."""
    sets = [(c,) for c in classes] + [tuple(sorted(s)) for s in combos]
    keys = ["-".join(map(str, s)) for s in sets]
    by_size = {"1": {m: hand_metrics(m) for m in methods}}
    if any(len(s) == 2 for s in sets):
        by_size["2"] = {m: hand_metrics(m, 0.02) for m in methods}
    tuning = hand_tuning(keys, methods)
    return {
        "checkpoint": "x", "dataset": "mnist", "backbone": "cnn", "class_names": [str(i) for i in range(10)],
        "forget_classes": list(classes), "forget_sets": [list(s) for s in sets],
        "seeds": 2, "num_test_images": 1000, "created": "2025-01-01T00:00:00+00:00", "command": "wfexplain benchmark",
        "methods": by_size["1"], "by_size": by_size,
        "per_set": {k: set_results(s, methods) for k, s in zip(keys, sets, strict=True)},
        "cost": {"wf_round_seconds": BENCH_ROUND,
                 "one_request_seconds": {m: HAND["seconds"][m] for m in methods if m != "original"},
                 "parity": hand_parity(methods), "tuning_seconds": tuning["seconds"],
                 "wf_seconds_source": "measured in this run", "retrain_seconds_source": "measured in this run"},
        "selection": {"tuned": True, "validation": {"images": 600, "seed": 0, "sha256": "0123456789abcdef",
                                                    "seen_by_backbone": False, "images_scored": 600},
                      "test_read_after_choosing": True},
        "tuning": tuning,
        "config": {m: {k: {**c, "batch_size": 64} for k, c in tuning["chosen"][m].items()} for m in tuning["chosen"]},
    }


def make_old_bench(classes=(3, 5), methods=BENCH_METHODS) -> dict:
    """A benchmark.json as written before the fair-tuning protocol: ``per_class``, the old metric keys
    (``mia_efficacy``, ``zrf``, ``relearn_steps``), the old cost, no sets, selection or tuning."""
    old = {"forget_accuracy_test", "forget_accuracy_train", "retain_accuracy_test", "retain_accuracy_train",
           "probe_accuracy", "seconds"}

    def metrics(m: str, shift: float = 0.0) -> dict:
        new = hand_metrics(m, shift)
        out = {k: v for k, v in new.items() if k in old}
        return {**out, "mia_efficacy": new["mia_efficacy_salun"], "zrf": new["zrf_paper"],
                "relearn_steps": new["relearn_steps_lr1e3"]}

    per_class = {str(c): {m: {**e, "metrics": metrics(m, 0.001 * c)} for m, e in set_results((c,), methods).items()}
                 for c in classes}
    return {
        "checkpoint": "x", "dataset": "mnist", "backbone": "cnn", "class_names": [str(i) for i in range(10)],
        "forget_classes": list(classes), "seeds": 2, "num_test_images": 1000, "created": "2024-01-01T00:00:00+00:00",
        "command": "wfexplain benchmark", "methods": {m: metrics(m) for m in methods}, "per_class": per_class,
        "cost": {"wf_all_classes_seconds": 20.0, "retrain_one_class_seconds": 100.0, "ratio": 0.2,
                 "one_class_seconds": {m: HAND["seconds"][m] for m in methods if m != "original"}},
        "config": {"wf": {"steps": 2000}, "finetune": {"epochs": 5}},
    }


@pytest.fixture(name="make_bench", scope="session")
def make_bench_fixture():
    """``make_bench(classes=(3, 5), combos=((3, 5), (1, 4)), methods=all eight)``: a benchmark.json (dict) of
    hand-made numbers, a known best per column among the unlearning methods, for a checkpoint of the ten digit
    classes: two single classes, two pairs, tuned (``tuning``, ``selection``), with the cost at parity."""
    return make_bench


@pytest.fixture(name="make_old_bench", scope="session")
def make_old_bench_fixture():
    """``make_old_bench(classes=(3, 5), methods=all eight)``: the same numbers in the schema written before the
    fair-tuning protocol (``per_class``, old metric keys and cost; no sets, selection or tuning)."""
    return make_old_bench


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
