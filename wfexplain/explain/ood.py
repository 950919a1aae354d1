"""Is an image unlike a model's training data? Post-hoc scores of the original (unfiltered) model, calibrated.

Scores: ``msp``, the maximum softmax probability (Hendrycks & Gimpel 2017; low means foreign); ``energy``,
``−T·logsumexp(logits / T)`` (Liu et al. 2020); ``mahalanobis``, the distance of the penultimate features (the
head's input) to the nearest class mean under one shared covariance fit on training images (Lee et al. 2018),
shrunk toward a scaled identity (:data:`SHRINKAGE`); ``layers``, Lee et al.'s feature ensemble, equal weights: that
distance on the pooled outputs of up to :data:`MAX_LAYERS` gated layers, standardised on the calibration images,
averaged. :func:`calibrate` sets thresholds on in-distribution images the model was not fit on (a validation split):
an image is flagged when any score passes its threshold or its normalised pixel statistics are far from those of
training images (the old, uncalibrated check); the thresholds sit at one common per-score quantile chosen so that,
all together, ``fpr`` of the calibration images are flagged (a score alone: its ``1 − fpr`` quantile). Scoring runs
on a private copy of the model: the shared one never gets a hook.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones import head_module
from ..hooks import watch

SCORES = ("msp", "energy", "mahalanobis", "layers")
LOW_IS_FOREIGN = frozenset({"msp"})  # the other scores are foreign when high
PENULTIMATE = "mahalanobis"  # the head's input among the fitted feature statistics (its score's name)
SHRINKAGE = 0.1  # covariance <- (1 - s) covariance + s (trace / d) identity
MAX_LAYERS = 8  # gated layers of the feature ensemble, evenly spread over the network's gate sites
PIXEL_MEAN, PIXEL_STD = (-1.5, 1.5), (0.3, 3.0)  # normalised training images: mean about 0, std about 1
PIXEL_REASON = "its normalised pixels have mean {mean:+.2f} and std {std:.2f}, where training images have about 0 and 1"
PHOTOS_ENV = "WFEXPLAIN_PHOTOS"  # folder of the foolbox sample photos (scripts/ensure_photos.sh)
PHOTO_KINDS = {"imagenet": "imagenet_", "cifar10": "cifar10_", "cifar100": "cifar100_", "mnist": "mnist_",
               "fashion-mnist": "fashionMNIST_"}
Images = torch.Tensor | Iterable[torch.Tensor]  # normalised model inputs [N, C, H, W], or their batches


@dataclass(frozen=True, eq=False)
class Detector:
    """Calibrated thresholds of the out-of-distribution scores, and the feature statistics they need."""

    thresholds: Mapping[str, float]  # score -> threshold, in the score's own units
    fpr: float  # share of in-distribution images the thresholds are set to flag (everything together)
    level: float  # share of the calibration images each score flags alone (<= fpr)
    calibration_images: int
    source: str  # where the calibration images came from, in words
    gaussians: Mapping[str, tuple[np.ndarray, np.ndarray]]  # PENULTIMATE or a layer -> (class means, whitening)
    fit_images: int
    scale: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # layer -> calibration mean, std
    calibration_rate: float = 0.0  # share of the calibration images flagged
    temperature: float = 1.0
    test_rate: float | None = None  # share of test images flagged, if measured
    test_images: int = 0

    def flags(self, scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per image: whether each score passes its threshold, ``"pixels"`` (the extra signal) and ``"any"``."""
        out = {s: _foreign(s, np.asarray(scores[s])) > _foreign(s, np.asarray(t)) for s, t in self.thresholds.items()}
        mean, std = np.asarray(scores["mean"]), np.asarray(scores["std"])
        out["pixels"] = ~((PIXEL_MEAN[0] <= mean) & (mean <= PIXEL_MEAN[1]) & (PIXEL_STD[0] <= std) & (std <= PIXEL_STD[1]))
        out["any"] = np.any(np.stack(list(out.values())), axis=0)
        return out

    def decide(self, scores: Mapping[str, float]) -> list[str]:
        """Reasons, in words with numbers, to think one image (its :func:`score` values) is out of distribution."""
        flagged = self.flags({k: np.asarray([v]) for k, v in scores.items()})
        reasons = [_REASON[s].format(v=float(scores[s]), t=t, n=len(self.scale)) for s, t in self.thresholds.items()
                   if flagged[s][0]]
        if flagged["pixels"][0]:
            reasons.append(PIXEL_REASON.format(mean=float(scores["mean"]), std=float(scores["std"])))
        return reasons

    @property
    def summary(self) -> str:
        """What the thresholds promise and where they were set, for a warning."""
        measured = "" if self.test_rate is None else f" ({self.test_rate:.1%} of {self.test_images:,} measured)"
        return (f"these checks flag about {self.fpr:.0%} of ordinary test images{measured}; thresholds set on "
                f"{self.calibration_images:,} {self.source}, the Mahalanobis statistics on {self.fit_images:,} training images")


_REASON = {  # v: the image's score, t: the threshold, n: layers in the ensemble
    "msp": "the top class gets only {v:.1%} (max-softmax threshold {t:.1%})",
    "energy": "its energy score −logsumexp(logits) is {v:.2f}, above the threshold {t:.2f}",
    "mahalanobis": "its penultimate features are {v:.1f} from the nearest class mean (Mahalanobis distance; threshold {t:.1f})",
    "layers": "its features in {n} inner layers are {v:.1f} standard deviations farther from the class means than ordinary "
              "images' (threshold {t:.1f})"}


def _foreign(name: str, values: np.ndarray) -> np.ndarray:  # the score oriented so that higher means more foreign
    return -values if name in LOW_IS_FOREIGN else values


def ensemble_layers(model) -> list[str]:
    """Up to :data:`MAX_LAYERS` gate sites of ``model``, evenly spread in order (attention modules' tuples left out)."""
    paths = [s.path for s in model.sites if s.kind != "mha"]
    return [paths[i] for i in sorted({round(float(i)) for i in np.linspace(0, len(paths) - 1, MAX_LAYERS)})] if paths else []


def _pool(t, dim: int, batch: int) -> torch.Tensor:
    """``[B, D]``: a layer's activation averaged over its positions (channels first for ``dim`` 1, else last)."""
    t = (t[0] if isinstance(t, tuple) else t).detach().float()
    b = batch
    return t.reshape(b, -1) if t.ndim <= 2 else t.flatten(2).mean(2) if dim == 1 else t.reshape(b, -1, t.shape[-1]).mean(1)


@torch.no_grad()
def _run(model, images: Images, layers: Sequence[str], batch: int = 256
         ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]]:
    """Per batch: ``(logits, {PENULTIMATE and each layer: pooled features [B, D]}, pixel mean and std [B, 2])`` of
    the original model, run on a private copy (temporary hooks there read the head's input and the layers)."""
    private = copy.deepcopy(model).eval()
    device, dims = next(private.parameters()).device, {s.path: s.dim for s in private.sites}
    seen: dict[str, torch.Tensor] = {}

    def keep(path: str, t) -> None:
        seen[path] = _pool(t, dims.get(path, -1), len(xb)).double().cpu()

    with watch({PENULTIMATE: head_module(private.backbone, private.heads)}, on_input=lambda p, m, i, o: keep(p, i[0])), \
            watch({p: private.backbone.get_submodule(p) for p in layers}, on_output=lambda p, m, i, o: keep(p, o)):
        for xb in images.split(batch) if isinstance(images, torch.Tensor) else images:
            logits = private(xb.to(device)).double().cpu().numpy()
            flat = xb.flatten(1).double()
            yield logits, {k: v.numpy() for k, v in seen.items()}, torch.stack([flat.mean(1), flat.std(1)], 1).numpy()


def _gaussian(counts: np.ndarray, sums: np.ndarray, outer: np.ndarray, shrinkage: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(class means [K, D], whitening [D, D])`` from per-class feature counts and sums and the sum of outer products:
    one shared covariance, shrunk toward trace/d times the identity. Only classes with images get a mean."""
    counts, sums = counts[counts > 0], sums[counts > 0]
    cov = (outer - (sums.T / counts) @ sums) / counts.sum()
    cov = (1 - shrinkage) * cov + shrinkage * max(np.trace(cov) / len(cov), 1e-12) * np.eye(len(cov))
    vals, vecs = np.linalg.eigh(cov)
    return sums / counts[:, None], vecs / np.sqrt(np.maximum(vals, 1e-12 * vals.max()))


def mahalanobis(feats: np.ndarray, means: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """Per row of ``feats``: the Mahalanobis distance to the nearest class mean."""
    z, m = np.asarray(feats, dtype=np.float64) @ whiten, means @ whiten
    d2 = (z ** 2).sum(1)[:, None] - 2 * z @ m.T + (m ** 2).sum(1)[None]
    return np.sqrt(np.maximum(d2, 0.0).min(1))


def _raw(model, detector: Detector, images: Images) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(scores without "layers", {layer: Mahalanobis distance})`` per image."""
    parts: dict[str, list[np.ndarray]] = {}
    layers = [k for k in detector.gaussians if k != PENULTIMATE]
    for logits, feats, pixels in _run(model, images, layers):
        z = logits / detector.temperature
        top = z.max(1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(1))
        batch = {"msp": np.exp(top[:, 0] - lse), "energy": -detector.temperature * lse, "mean": pixels[:, 0],
                 "std": pixels[:, 1], **{k: mahalanobis(feats[k], *g) for k, g in detector.gaussians.items()}}
        for k, v in batch.items():
            parts.setdefault(k, []).append(v)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    return out, {k: out.pop(k) for k in layers}


def _ensemble(distances: Mapping[str, np.ndarray], scale: Mapping[str, tuple[float, float]]) -> np.ndarray:
    return np.mean([(distances[k] - m) / s for k, (m, s) in scale.items()], axis=0)


def score(model, detector: Detector, images: Images) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORES`, and the pixel ``mean`` and ``std``, of each image."""
    out, distances = _raw(model, detector, images)
    return {**out, "layers": _ensemble(distances, detector.scale)} if detector.scale else out


def set_thresholds(cal: Mapping[str, np.ndarray], fpr: float, use: Sequence[str] = SCORES,
                   extra: np.ndarray | None = None) -> tuple[dict[str, float], float]:
    """``(thresholds, level)``: each score of ``use`` at its ``1 − level`` quantile on the calibration scores ``cal``,
    the largest level at which all of them together (with the images ``extra`` flags) flag at most ``fpr``."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    foreign = {s: _foreign(s, np.asarray(cal[s], dtype=np.float64)) for s in use}
    base = [np.zeros(len(foreign[use[0]]), bool) if extra is None else np.asarray(extra, bool)]

    def at(level: float) -> dict[str, float]:
        return {s: float(np.quantile(v, 1 - level, method="inverted_cdf")) for s, v in foreign.items()}

    def rate(th: dict[str, float]) -> float:
        return float(np.mean(np.any(np.stack(base + [foreign[s] > th[s] for s in use]), axis=0)))

    lo, hi = (fpr, fpr) if rate(at(fpr)) <= fpr else (0.0, fpr)
    for _ in range(40 if lo < hi else 0):  # the largest level that keeps the rate within fpr
        lo, hi = ((lo + hi) / 2, hi) if rate(at((lo + hi) / 2)) <= fpr else (lo, (lo + hi) / 2)
    return {s: float(_foreign(s, np.asarray(t))) for s, t in at(lo).items()}, lo


def calibrate(model, fit_images: Images, fit_labels, cal_images: Images, fpr: float = 0.05, *,
              source: str = "in-distribution images", use: Sequence[str] = SCORES,
              shrinkage: float = SHRINKAGE) -> Detector:
    """Fit the Mahalanobis statistics of a :class:`~wfexplain.filtering.FilteredModel` (scored unfiltered) on
    ``fit_images`` (training images, with ``fit_labels``), then set the thresholds of the scores ``use`` so that
    ``fpr`` of ``cal_images`` (in-distribution, not fit) are flagged; ``source`` says where those came from."""
    if not use or set(use) - set(SCORES):
        raise ValueError(f"use must name some of {SCORES}, got {list(use)}")
    labels, k = torch.as_tensor(fit_labels).long().numpy(), model.num_classes
    layers = ensemble_layers(model) if "layers" in use else []
    moments: dict[str, list[np.ndarray]] = {}
    start = 0
    for _, feats, _ in _run(model, fit_images, layers):
        onehot = np.eye(k)[labels[start:start + len(feats[PENULTIMATE])]]
        start += len(onehot)
        for name, f in feats.items():  # per-class counts and sums, and the sum of outer products
            new = (onehot.sum(0), onehot.T @ f, f.T @ f)
            moments[name] = [a + b for a, b in zip(moments.get(name, (0, 0, 0)), new, strict=True)]
    gaussians = {name: _gaussian(m[0], m[1], m[2], shrinkage) for name, m in moments.items()}
    det = Detector({}, fpr, 0.0, 0, source, gaussians, start)
    cal, distances = _raw(model, det, cal_images)
    if layers:
        scale = {p: (float(d.mean()), float(d.std()) or 1.0) for p, d in distances.items()}
        det, cal["layers"] = dataclasses.replace(det, scale=scale), _ensemble(distances, scale)
    thresholds, level = set_thresholds(cal, fpr, use, det.flags(cal)["pixels"])
    det = dataclasses.replace(det, thresholds=thresholds, level=level, calibration_images=len(cal["msp"]))
    return dataclasses.replace(det, calibration_rate=rates(det, cal)["any"])


def rates(detector: Detector, scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Share of the images flagged by each score, by the pixel signal and by the detector (``"any"``)."""
    return {k: float(np.mean(v)) for k, v in detector.flags(scores).items()}


# ---------------------------------------------------------------- a checkpoint's own data


def _loader(ds, batch: int = 256) -> Iterator[torch.Tensor]:
    return (x for x, _ in torch.utils.data.DataLoader(ds, batch_size=batch))


def checkpoint_detector(model, data_dir: str | os.PathLike | None = None, fpr: float = 0.05, cal_limit: int = 2000,
                        fit_limit: int = 5000, test_limit: int | None = None, seed: int = 0) -> Detector:
    """A :class:`Detector` of a loaded checkpoint, calibrated on its own data.

    Calibration: at most ``cal_limit`` images of its validation split; if it records none, a seeded hold-out of its
    training images (seen by the backbone, so more than ``fpr`` of test images may be flagged: ``source`` says so).
    Mahalanobis statistics: at most ``fit_limit`` other training images. With ``test_limit``, the share of that many
    test images flagged is recorded (``test_rate``). All subsets are seeded and class-stratified.
    """
    from ..data import stratified_subset, validation_split
    from ..splits import _subset, checkpoint_split, checkpoint_train_split, checkpoint_validation_split

    manifest = model.checkpoint_manifest()
    seen = checkpoint_train_split(manifest, data_dir)
    val = checkpoint_validation_split(manifest, data_dir)
    if val is not None:
        cal, fit = val, seen
        source = (f"images of the checkpoint's validation split ({len(val):,} training images held out, "
                  + ("seen by the backbone)" if manifest.validation["seen_by_backbone"] else "never seen by the backbone)"))
    else:
        keep, held = validation_split(seen.targets, min(cal_limit, len(seen) // 2), seed)
        cal, fit = _subset(seen, held), _subset(seen, keep)
        source = ("training images held out from the Mahalanobis fit (the checkpoint records no validation split; "
                  "the backbone trained on them, so ordinary test images may be flagged more often)")
    cal = _subset(cal, stratified_subset(cal.targets, cal_limit, seed))
    fit = _subset(fit, stratified_subset(fit.targets, fit_limit, seed))
    det = calibrate(model, _loader(fit), fit.targets, _loader(cal), fpr, source=source)
    if test_limit is not None:
        test = checkpoint_split(manifest, "test", data_dir)
        test = _subset(test, stratified_subset(test.targets, test_limit, seed))
        det = dataclasses.replace(det, test_rate=rates(det, score(model, det, _loader(test)))["any"], test_images=len(test))
    return det


def photos_dir() -> Path:  # where scripts/ensure_photos.sh puts the foolbox sample photos
    return Path(os.environ.get(PHOTOS_ENV) or Path.home() / ".cache" / "wfexplain" / "photos")


def photo_inputs(model, kind: str, folder: Path | None = None) -> torch.Tensor:
    """The sample photos of ``kind`` (:data:`PHOTO_KINDS`) read as uploads, preprocessed for ``model``; N may be 0."""
    from .uploads import read_image

    files = sorted((folder or photos_dir()).glob(PHOTO_KINDS[kind] + "[0-9]*"))
    return torch.stack([model.transform(read_image(p.read_bytes(), p.name)) for p in files]) if files else torch.empty(0)
