"""Out-of-distribution detection (wfexplain.explain.ood): calibrated thresholds, foreign inputs, real photos.

The photo tests read the foolbox sample photos that ``make photos`` (scripts/ensure_photos.sh) extracts into
``$WFEXPLAIN_PHOTOS`` (default ~/.cache/wfexplain/photos); they never download. Without the photos they are
skipped, except under CI, where they fail.
"""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import wfexplain
from tests import ROOT
from wfexplain import hooks
from wfexplain.explain import ood

FMNIST_CNN = ROOT / "checkpoints" / "fmnist-cnn"


def needs_photos(kind: str) -> None:
    if len(list(ood.photos_dir().glob(ood.PHOTO_KINDS[kind] + "[0-9]*"))) < 20:
        message = f"the foolbox sample photos ({kind}) are missing from {ood.photos_dir()}: run `make photos`"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message + " (CI must have them)")
        pytest.skip(message)


def bars(n: int, seed: int, invert: bool = False) -> list[Image.Image]:
    """``n`` images like ``bar_data``'s (dark noise, a bright bar at a class-specific row), as PIL images."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        img = rng.integers(0, 80, size=(16, 16), dtype=np.uint8)
        img[2 + 5 * (k % 3): 5 + 5 * (k % 3)] = 230
        out.append(Image.fromarray(255 - img if invert else img, "L"))
    return out


@pytest.fixture(scope="module")
def bars_model(trained_bars):
    return wfexplain.load(trained_bars)


@pytest.fixture(scope="module")
def bars_detector(bars_model):
    """Fit on 150 bar images, calibrated on 400 others at fpr 10%."""
    fit = torch.stack([bars_model.transform(im) for im in bars(150, 1)])
    cal = torch.stack([bars_model.transform(im) for im in bars(400, 2)])
    return ood.calibrate(bars_model, fit, torch.arange(150) % 3, cal, fpr=0.1, source="bar images"), cal


def test_thresholds_flag_the_stated_share_of_calibration_images(bars_model, bars_detector):
    det, cal = bars_detector
    assert det.fpr == 0.1 and det.calibration_images == 400 and det.fit_images == 150 and det.source == "bar images"
    assert set(det.thresholds) == set(ood.SCORES) and 0 < det.level <= 0.1
    assert 0.085 <= det.calibration_rate <= 0.1  # all together; a step of the level adds <= 4 of the 400 images
    rates = ood.rates(det, ood.score(bars_model, det, cal))
    assert rates["any"] == det.calibration_rate
    assert all(rates[s] <= det.level + 1e-9 for s in ood.SCORES)
    alone = ood.calibrate(bars_model, cal[:150], torch.arange(150) % 3, cal, fpr=0.1, use=("mahalanobis",))
    assert alone.level == 0.1 and list(alone.thresholds) == ["mahalanobis"]
    assert 0.09 <= ood.rates(alone, ood.score(bars_model, alone, cal))["mahalanobis"] <= 0.1


def test_set_thresholds_is_a_common_quantile_level():
    rng = np.random.default_rng(0)
    cal = {"msp": rng.uniform(0.5, 1, 2000), "energy": rng.normal(-8, 1, 2000), "mahalanobis": rng.gamma(9, 2, 2000)}
    th, level = ood.set_thresholds(cal, 0.05, use=("msp", "energy", "mahalanobis"))
    flagged = np.stack([cal["msp"] < th["msp"], cal["energy"] > th["energy"], cal["mahalanobis"] > th["mahalanobis"]])
    assert 0.0485 <= flagged.any(0).mean() <= 0.05 and 0.015 < level < 0.05  # a step of the level adds <= 3 images
    assert all(abs(f.mean() - level) < 0.001 for f in flagged)
    th1, level1 = ood.set_thresholds(cal, 0.05, use=("msp",))
    assert level1 == 0.05 and (cal["msp"] < th1["msp"]).mean() == 0.05
    with pytest.raises(ValueError, match="fpr must be in"):
        ood.set_thresholds(cal, 0.0, use=("msp",))


def test_foreign_inputs_are_flagged_and_in_domain_ones_mostly_not(bars_model, bars_detector):
    det, _ = bars_detector
    fresh = torch.stack([bars_model.transform(im) for im in bars(60, 3)])
    assert ood.rates(det, ood.score(bars_model, det, fresh))["any"] <= 0.25
    noise = torch.stack([bars_model.transform(Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16),
                                                                                                 dtype=np.uint8)))
                         for i in range(10)])
    inverted = torch.stack([bars_model.transform(im) for im in bars(10, 4, invert=True)])
    for foreign in (noise, inverted):
        flagged = det.flags(ood.score(bars_model, det, foreign))
        assert flagged["any"].all()
    one = {k: float(v[0]) for k, v in ood.score(bars_model, det, inverted[:1]).items()}
    reasons = det.decide(one)
    assert reasons and all(any(ch.isdigit() for ch in r) for r in reasons)


def test_a_photo_is_flagged_by_the_bars_model(bars_model, bars_detector):
    det, _ = bars_detector
    photos = ood.photo_inputs(bars_model, "imagenet")
    if not len(photos):
        needs_photos("imagenet")
    assert det.flags(ood.score(bars_model, det, photos))["any"].mean() >= 0.9


def test_deterministic_and_no_hook_left_behind(bars_model, bars_detector):
    det, cal = bars_detector
    before = hooks.count(bars_model)
    fit = torch.stack([bars_model.transform(im) for im in bars(150, 1)])
    again = ood.calibrate(bars_model, fit, torch.arange(150) % 3, cal, fpr=0.1, source="bar images")
    assert again.thresholds == det.thresholds and again.level == det.level
    assert all(np.array_equal(a, b) for k in det.gaussians for a, b in zip(again.gaussians[k], det.gaussians[k],
                                                                            strict=True))
    assert again.scale == det.scale and set(det.scale) == set(ood.ensemble_layers(bars_model))
    a, b = ood.score(bars_model, det, cal[:7]), ood.score(bars_model, det, list(cal[:7].split(3)))
    assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a)  # a tensor or its batches (float32 sums: not bit-equal)
    assert hooks.count(bars_model) == before


def test_decide_names_each_score_with_numbers(bars_detector):
    det, _ = bars_detector
    t = det.thresholds
    foreign = {"msp": t["msp"] / 2, "energy": t["energy"] + 5, "mahalanobis": t["mahalanobis"] * 3,
               "layers": t["layers"] + 2, "mean": 4.0, "std": 0.0}
    msp, energy, maha, layers, pixels = det.decide(foreign)
    assert msp.startswith(f"the top class gets only {t['msp'] / 2:.1%} (max-softmax threshold {t['msp']:.1%})")
    assert energy == f"its energy score −logsumexp(logits) is {t['energy'] + 5:.2f}, above the threshold {t['energy']:.2f}"
    assert "Mahalanobis distance; threshold" in maha and f"{t['mahalanobis'] * 3:.1f}" in maha
    assert layers.startswith(f"its features in {len(det.scale)} inner layers are {t['layers'] + 2:.1f} standard deviations")
    assert pixels == "its normalised pixels have mean +4.00 and std 0.00, where training images have about 0 and 1"
    ordinary = {"msp": 1.0, "energy": t["energy"] - 1, "mahalanobis": 0.0, "layers": -1.0, "mean": 0.0, "std": 1.0}
    assert det.decide(ordinary) == []
    assert det.summary.startswith("these checks flag about 10% of ordinary test images; thresholds set on 400 bar "
                                  "images, the Mahalanobis statistics on 150 training images")


def test_checkpoint_detector_uses_the_validation_split_or_says_what_it_fell_back_to(bars_model):
    det = ood.checkpoint_detector(bars_model, test_limit=12)
    v = bars_model.checkpoint_manifest().validation
    assert det.calibration_images == v["images"] and "the checkpoint's validation split" in det.source
    assert det.test_images == 12 and det.test_rate is not None and "measured" in det.summary
    bars_model.manifest, manifest = bars_model.manifest.replace(validation=None), bars_model.manifest
    try:
        fallback = ood.checkpoint_detector(bars_model, cal_limit=20)
    finally:
        bars_model.manifest = manifest
    assert fallback.calibration_images == 20 and "records no validation split" in fallback.source
    assert "the backbone trained on them" in fallback.source


# ---------------------------------------------------------------- the shipped checkpoint and real photos


@pytest.mark.slow
@pytest.mark.skipif(not (FMNIST_CNN / "manifest.json").is_file(), reason="checkpoints/fmnist-cnn is missing")
def test_fmnist_cnn_false_positives_on_test_images_and_detections_on_photos():
    """The rates reported on the issue (fpr 5%): 5.5% of the 10,000 test images flagged (the thresholds are set on
    held-out training images the backbone trained on: no validation split), 20/20 ImageNet, 19/20 CIFAR-10 and 19/20
    MNIST photos caught."""
    from wfexplain.splits import checkpoint_split

    for kind in ("imagenet", "cifar10", "mnist"):
        needs_photos(kind)
    model = wfexplain.load(FMNIST_CNN)
    det = ood.checkpoint_detector(model)
    assert det.calibration_images == 2000 and det.fit_images == 5000 and "records no validation split" in det.source
    assert 0.049 <= det.calibration_rate <= 0.05
    test = checkpoint_split(model.checkpoint_manifest(), "test")
    false_positives = ood.rates(det, ood.score(model, det, (x for x, _ in torch.utils.data.DataLoader(test, 500))))
    assert false_positives["any"] == pytest.approx(0.055, abs=0.015)
    caught = {k: ood.rates(det, ood.score(model, det, ood.photo_inputs(model, k)))["any"]
              for k in ("imagenet", "cifar10", "mnist")}
    assert caught == pytest.approx({"imagenet": 1.0, "cifar10": 0.95, "mnist": 0.95}, abs=0.1)
