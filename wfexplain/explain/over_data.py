"""Attributions over data: one class's test images explained before and after forgetting, averaged.

For ``N`` images, :func:`class_attributions` computes each image's attribution map for one target class under the
original model (forget nothing) and under the filtered model (the forget set), both for the *same* target per image
(its true label, the original model's prediction or the filtered model's), and scores every map with the insertion
and deletion AUCs of Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models"
(BMVC 2018; :func:`~wfexplain.explain.attributions.insertion_deletion`: insertion ↑, deletion ↓). The maps come from
Captum (Kokhlikyan et al., "Captum: A unified and generic model interpretability library for PyTorch", arXiv
2009.07896) through :func:`~wfexplain.explain.attributions.attribute`, in chunks of ``batch_size`` images. The result
holds the per-image maps and AUCs, the mean maps, and the means and sample standard deviations (ddof 1) of the AUCs;
:func:`to_npy` writes it as one NumPy structured array that ``np.load(..., allow_pickle=False)`` reads, image ids
included. This module never imports streamlit.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..filtering import FilteredModel
from ..forget import classes as forget_classes
from ..forget import key as forget_key
from .attributions import _OPTIONS, METHODS, attribute, insertion_deletion

TARGETS: tuple[str, ...] = ("true", "original", "filtered")  # the true label; the original / filtered model's argmax
SCORES: tuple[str, ...] = ("insertion_original", "deletion_original", "insertion_filtered", "deletion_filtered")


@dataclass(frozen=True)
class MethodOptions:
    """The method parameters the dashboard exposes (None: :func:`~wfexplain.explain.attributions.attribute`'s default).

    Frozen and hashable; :meth:`for_method` keeps only what one method takes, so a cache keyed on its result
    recomputes a method only when one of its own parameters changes.
    """

    ig_steps: int | None = None  # Integrated Gradients: n_steps (32)
    shap_samples: int | None = None  # Gradient SHAP: n_samples (16)
    occlusion_window: int | None = None  # Occlusion: window side in pixels (H / 7)
    occlusion_stride: int | None = None  # Occlusion: stride (window // 2)
    gradcam_layer: str | None = None  # Layer Grad-CAM: module path in the backbone (default_gradcam_layer)

    def for_method(self, method: str) -> dict:
        """The keyword options of :func:`~wfexplain.explain.attributions.attribute` for ``method`` (unset left out)."""
        if method not in METHODS:
            raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
        per_method: dict[str, dict[str, object]] = {
            "Integrated Gradients": {"n_steps": self.ig_steps}, "Gradient SHAP": {"n_samples": self.shap_samples},
            "Occlusion": {"window": self.occlusion_window, "stride": self.occlusion_stride},
            "Layer Grad-CAM": {"layer": self.gradcam_layer}}
        chosen = per_method.get(method, {})
        return {k: v for k, v in chosen.items() if v is not None}


def _check(model: FilteredModel, images: torch.Tensor, labels, ids, method: str, target: str, options: Mapping,
           batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    unknown = sorted(set(options) - _OPTIONS[method])
    if unknown:
        raise ValueError(f"{method} does not take option(s) {unknown}; valid: {sorted(_OPTIONS[method])}")
    if images.ndim != 4:
        raise ValueError(f"images must be a batch [N, C, H, W], got shape {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("no images to explain: N is 0")
    labels_np = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64).reshape(-1)
    ids_np = np.asarray(torch.as_tensor(ids).cpu(), dtype=np.int64).reshape(-1)
    if not len(images) == len(labels_np) == len(ids_np):
        raise ValueError(f"mismatched lengths: {len(images)} images, {len(labels_np)} labels, {len(ids_np)} ids")
    n_classes = len(model.class_names)
    if ((labels_np < 0) | (labels_np >= n_classes)).any():
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return labels_np, ids_np


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def class_attributions(model: FilteredModel, images: torch.Tensor, labels, ids, method: str, forget=None,
                       target: str = "true", options: MethodOptions | Mapping | None = None, batch_size: int = 16,
                       steps: int = 32, progress: Callable[[int, int], None] | None = None) -> dict:
    """Attribution maps and insertion/deletion AUCs of ``N`` images, original vs filtered model.

    Args:
        model: the shared, eval-mode filtered model; never modified.
        images: normalised inputs ``[N, C, H, W]`` (e.g. one class's test images).
        labels: their true classes (``N`` ints).
        ids: their ids, e.g. positions in the test split (``N`` ints), kept with every row of the result.
        method: one of :data:`~wfexplain.explain.attributions.METHODS`.
        forget: the forget set of the filtered model (class indices; None or empty: the original model twice).
        target: the class explained per image, the same for both models: ``"true"`` (the label), ``"original"``
            (the original model's argmax) or ``"filtered"`` (the filtered model's argmax).
        options: a :class:`MethodOptions` or a dict of :func:`~wfexplain.explain.attributions.attribute` options of
            ``method`` (IG ``n_steps``; Gradient SHAP ``n_samples``; Occlusion ``window``/``stride``; Grad-CAM
            ``layer``; see its ``_OPTIONS``).
        batch_size: images per :func:`attribute` call.
        steps: points - 1 of each insertion/deletion curve.
        progress: called with ``(images done, N)``, from ``(0, N)`` to ``(N, N)``.

    Returns:
        ``ids``, ``labels``, ``targets`` (int64 ``[N]``); ``maps_original``, ``maps_filtered`` (float32 ``[N, H, W]``);
        the AUCs ``insertion_original``, ``deletion_original``, ``insertion_filtered``, ``deletion_filtered``
        (float64 ``[N]``); ``mean_original``, ``mean_filtered`` (``[H, W]``); ``mean_image`` (the mean input in pixel
        units, ``[H, W]`` or ``[H, W, C]``); ``summary``: score name -> ``(mean, sample std)``; and ``method``,
        ``target``, ``forget`` (sorted classes), ``options``, ``seconds``.

    Raises:
        ValueError: an unknown method, target or option, no images, or lengths that differ.
    """
    if isinstance(options, MethodOptions):
        options = options.for_method(method) if method in METHODS else {}
    options = dict(options or {})
    labels_np, ids_np = _check(model, images, labels, ids, method, target, options, batch_size)
    if model.backbone.training:
        raise ValueError("explanations need the backbone in eval mode")
    chosen = forget_classes(forget, len(model.class_names))
    filtered = chosen or None
    start, n = time.perf_counter(), len(images)
    device = next(model.parameters()).device
    maps: dict[str, list[np.ndarray]] = {"original": [], "filtered": []}
    scores: dict[str, list[float]] = {k: [] for k in SCORES}
    targets: list[int] = []
    if progress is not None:
        progress(0, n)
    for lo in range(0, n, batch_size):
        x = images[lo: lo + batch_size].to(device)
        if target == "true":
            t = torch.from_numpy(labels_np[lo: lo + batch_size]).to(device)
        else:
            with torch.no_grad():
                t = model(x, None if target == "original" else filtered).argmax(dim=1)
        chunk = {which: attribute(model, x, t, method, forget=f, **options)
                 for which, f in (("original", None), ("filtered", filtered))}
        for i in range(len(x)):
            for which, f in (("original", None), ("filtered", filtered)):
                auc = insertion_deletion(model, x[i: i + 1], chunk[which][i], int(t[i]), forget=f, steps=steps)
                scores[f"insertion_{which}"].append(auc["insertion_auc"])
                scores[f"deletion_{which}"].append(auc["deletion_auc"])
            if progress is not None:
                progress(lo + i + 1, n)
        targets += t.cpu().tolist()
        for which in maps:
            maps[which].append(chunk[which].cpu().numpy().astype(np.float32))
    mean, std = np.array(model.info.mean), np.array(model.info.std)
    pixels = (images.detach().float().mean(0).cpu().numpy().transpose(1, 2, 0) * std + mean).clip(0, 1)
    out: dict = {"ids": ids_np, "labels": labels_np, "targets": np.array(targets, dtype=np.int64),
                 "maps_original": np.concatenate(maps["original"]), "maps_filtered": np.concatenate(maps["filtered"])}
    out |= {k: np.array(v, dtype=np.float64) for k, v in scores.items()}
    out |= {"mean_original": out["maps_original"].mean(0), "mean_filtered": out["maps_filtered"].mean(0),
            "mean_image": pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
            "summary": {k: _mean_std(out[k]) for k in SCORES},
            "method": method, "target": target, "forget": chosen, "options": options,
            "seconds": time.perf_counter() - start}
    return out


def npy_dtype(h: int, w: int) -> np.dtype:
    """The structured dtype of :func:`to_npy`'s rows: ids, classes, both maps ``(H, W)`` and the four AUCs."""
    return np.dtype([("id", "<i8"), ("label", "<i8"), ("target", "<i8"), ("original", "<f4", (h, w)),
                     ("filtered", "<f4", (h, w))] + [(k, "<f8") for k in SCORES])


def to_npy(result: Mapping) -> bytes:
    """``result`` as the bytes of one ``.npy`` file: a structured array, one row per image, no pickle.

    Fields: ``id``, ``label``, ``target`` (int64), ``original``, ``filtered`` (float32 ``(H, W)`` maps) and
    ``insertion_original``, ``deletion_original``, ``insertion_filtered``, ``deletion_filtered`` (float64).
    ``np.load(io.BytesIO(data), allow_pickle=False)`` reads it back.
    """
    maps = np.asarray(result["maps_original"])
    rows = np.zeros(len(maps), dtype=npy_dtype(*maps.shape[1:]))
    for field in ("id", "label", "target"):
        rows[field] = result[field + "s"]
    rows["original"], rows["filtered"] = maps, result["maps_filtered"]
    for k in SCORES:
        rows[k] = result[k]
    buf = io.BytesIO()
    np.save(buf, rows, allow_pickle=False)
    return buf.getvalue()


def scores_csv(result: Mapping) -> bytes:
    """The per-image scores as CSV: ``id,label,target`` and the four AUCs (numbers only)."""
    cols = ["ids", "labels", "targets", *SCORES]
    lines = ["id,label,target," + ",".join(SCORES)]
    lines += [",".join(str(int(v)) if i < 3 else repr(float(v)) for i, v in enumerate(row))
              for row in zip(*(result[c] for c in cols), strict=True)]
    return ("\n".join(lines) + "\n").encode()


def summary_rows(result: Mapping) -> dict[str, dict[str, str]]:
    """``{"original"|"filtered": {"insertion AUC ↑": "mean ± std", "deletion AUC ↓": ...}}`` (3 decimals)."""
    def cell(key: str) -> str:
        m, s = result["summary"][key]
        return f"{m:.3f} ± {s:.3f}"

    return {which: {"insertion AUC ↑": cell(f"insertion_{which}"), "deletion AUC ↓": cell(f"deletion_{which}")}
            for which in ("original", "filtered")}


def file_name(checkpoint: str, method: str, cls: int, n: int, target: str, forget: Sequence[int] | None,
              fmt: str) -> str:
    """The name of a download over data, like :func:`wfexplain.export.attribution_name`: checkpoint, method, class,
    number of images, target mode and forget set."""
    slug = "".join(ch if ch.isalnum() else "_" for ch in method).strip("_")
    chosen = forget_key(list(forget or [])) or "none"
    return f"{checkpoint.replace('/', '_')}-attributions-{slug}-class{cls}-n{n}-target_{target}-forget{chosen}.{fmt}"
