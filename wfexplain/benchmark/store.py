"""The benchmark's run store: every scored (seed, forget set, method) and tuning point kept on disk as it finishes.

A full benchmark (every class, several seeds, a Retrain per class and seed) takes hours on a
CPU. With the store, an interrupted ``wfexplain benchmark`` resumes where it stopped, two
processes given disjoint ``--forget`` lists fill the same store, and a last run over all
classes only aggregates. Layout, beside the checkpoint (``<set>``: the forget set's key, ``0`` or ``0-6``)::

    <checkpoint>/benchmark-runs/<key>/store.json                          what the key stands for
    <checkpoint>/benchmark-runs/<key>/seed<S>/wf-round-<cfg>.safetensors      WF's round (memory + seconds)
    <checkpoint>/benchmark-runs/<key>/seed<S>/set<set>/<method>-<cfg>.json    one scored result (test data)
    <checkpoint>/benchmark-runs/<key>/seed<S>/set<set>/tune-<method>-<cfg>.json  one tuning point (validation)

Keyed by everything a result depends on. ``<key>`` digests (written to ``store.json``): the SHA-256 of
every weight file of the checkpoint; the preprocessing; the SHA-256 of the training images and labels the
methods unlearn on and Retrain trains on (:func:`dataset_digest`: file bytes or pixels, in order); what the
results are scored on: for the benchmark's results (:meth:`RunStore.probe_inputs`) the exact test and
training images and labels scored (the preprocessed tensors after ``limit``/``train_limit``,
:func:`tensor_digest`), for tuning points (:meth:`RunStore.validation_inputs`) the validation images, so the
two never share a directory; and :data:`SCORING_VERSION`. Another ``--data-dir`` is another store.
``<cfg>`` digests one method's full configuration as the runner passes it (a baseline's hyperparameters,
Retrain's training recipe, WF's unlearning config and how its round is obtained, ``wf_removed``'s WF and
removal configs); the seed, forget set and method are in the path. Changing one baseline's hyperparameters
thus recomputes that baseline only.

Validated on read: a file records the full store key, its seed, forget set, method and the SHA-256 of
its configuration, and is used only when all of these match and its content is valid (a result: every
scored metric of the catalogue a number within its :attr:`Metric.bounds` or null, the per-class lists of the
right length, in [0, 1], the forget-set scores finite; a tuning point: accuracies in [0, 1]); a WF round
file must record the same and hold finite matrices of the expected names and shapes. Anything else
(absent, unreadable, copied from another store, tampered) is ignored and recomputed, then overwritten. A
stored result keeps the seconds measured when it was computed. Files are written atomically, as strict
JSON (a NaN is stored as null and read back as NaN).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset

from .. import forget as forget_sets
from ..atomic import atomic_write, dir_lock, write_json
from ..checkpoint import inside
from ..data import ImageFolderImages, TensorImages
from ..manifest import Manifest
from .catalogue import METRICS
from .scoring import SCORED, Probe

RUNS_DIR = "benchmark-runs"
SCORING_VERSION = 3  # bump when score() changes what a stored result means (3: forget sets, privacy metrics)
STORED = (*SCORED, "seconds")  # the metrics a stored result holds


def digest(obj) -> str:
    """Short SHA-256 of ``obj``'s canonical JSON (names files and directories)."""
    return full_digest(obj)[:12]


def full_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (C order)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dataset_digest(ds) -> str:
    """SHA-256 of the images and labels of a dataset split, in order, as stored (not preprocessed).

    Handles the splits :mod:`wfexplain.splits` makes: :class:`TensorImages` (its pixels), an
    :class:`ImageFolderImages` (each file's class folder, name and bytes) and subsets of them
    (their indices picked, in order). Any other dataset is hashed through its preprocessed items.
    """
    idx: list[int] | None = None
    while isinstance(ds, Subset):  # map the selection down to the underlying split
        idx = list(ds.indices) if idx is None else [ds.indices[i] for i in idx]
        ds = ds.dataset
    h = hashlib.sha256()
    if isinstance(ds, TensorImages):
        sel = torch.arange(len(ds)) if idx is None else torch.as_tensor(idx, dtype=torch.long)
        h.update(b"tensor-images|")
        h.update(tensor_digest(ds.images[sel]).encode())
        h.update(tensor_digest(ds.targets[sel]).encode())
    elif isinstance(ds, ImageFolderImages):
        h.update(b"image-folder|")
        for i in range(len(ds)) if idx is None else idx:
            path, label = ds.samples[i]
            name = f"{path.parent.name}/{path.name}|{label}|".encode()
            h.update(len(name).to_bytes(8, "little") + name)
            data = path.read_bytes()
            h.update(len(data).to_bytes(8, "little") + data)
    else:
        h.update(b"items|")
        items = ds if idx is None else Subset(ds, idx)
        for x, y in DataLoader(items, batch_size=256):
            h.update(tensor_digest(x).encode())
            h.update(tensor_digest(torch.as_tensor(y)).encode())
    return h.hexdigest()


def _number(v, low: float = -math.inf, high: float = math.inf) -> bool:
    """A JSON number (not a bool, not NaN/Infinity: those are written as null) in ``[low, high]``."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high


def check_result(result, num_classes: int) -> str:
    """Why ``result`` (parsed JSON) is not a scored result for ``num_classes`` classes ("" if it is)."""
    if not isinstance(result, dict):
        return "not an object"
    metrics = result.get("metrics")
    if not isinstance(metrics, dict) or set(metrics) != set(STORED):
        return "metrics missing or unexpected"
    for name, v in metrics.items():
        if v is not None and not _number(v, *METRICS[name].bounds):
            return f"metric {name} is {v!r}"
    scores = result.get("forget_scores")
    if not isinstance(scores, list) or not all(_number(v) for v in scores):
        return "forget_scores is not a list of finite numbers"
    for name, nullable in (("per_class_accuracy", True), ("forget_predictions", False)):
        values = result.get(name)
        if not isinstance(values, list) or len(values) != num_classes:
            return f"{name} is not a list of {num_classes} numbers"
        if not all((v is None and nullable) or _number(v, 0.0, 1.0) for v in values):
            return f"{name} holds a value out of [0, 1]"
    return ""


class RunStore:
    """Results of one checkpoint and one training split, plus what else they were computed on (see the module doc)."""

    def __init__(self, checkpoint: str | os.PathLike, manifest: Manifest, train, scored: Mapping):
        """``manifest``: the checkpoint's (loaded, so its digests were checked); ``train``: the training split the
        methods unlearn on; ``scored``: what the results are scored on (:meth:`probe_inputs`, the test and training
        images; or :meth:`validation_inputs`, the tuning's validation images)."""
        self.num_classes = manifest.dataset.num_classes
        self.inputs = {
            "weights_sha256": dict(sorted(manifest.files.items())),
            "preprocessing": dataclasses.asdict(manifest.dataset),
            "unlearning_split_sha256": dataset_digest(train), "num_unlearning_images": len(train),
            **scored, "scoring_version": SCORING_VERSION,
        }
        self.key = full_digest(self.inputs)
        self.root = inside(checkpoint, f"{RUNS_DIR}/{self.key[:16]}")  # refused if a symlink leads it elsewhere
        self.lock = dir_lock(checkpoint)  # a write into the checkpoint never races the checkpoint's own swap

    @staticmethod
    def probe_inputs(limit: int | None, train_limit: int | None, data: Probe) -> dict:
        """What scored results depend on: the exact test and training images and labels scored."""
        return {
            "limit": limit, "train_limit": train_limit,
            "test_images_sha256": tensor_digest(data.x_test), "test_labels_sha256": tensor_digest(data.y_test),
            "num_test_images": len(data.y_test),
            "train_images_sha256": tensor_digest(data.x_train), "train_labels_sha256": tensor_digest(data.y_train),
            "num_train_images_scored": len(data.y_train),
        }

    @staticmethod
    def validation_inputs(x: torch.Tensor, y: torch.Tensor) -> dict:
        """What tuning points depend on: the exact validation images and labels scored."""
        return {"validation_images_sha256": tensor_digest(x), "validation_labels_sha256": tensor_digest(y),
                "num_validation_images": len(y)}

    def _stamp(self, seed: int, forget: tuple[int, ...] | None, method: str, config) -> dict:
        """What a stored file records about itself (checked on read)."""
        return {"store_key": self.key, "seed": seed, "forget": None if forget is None else forget_sets.key(forget),
                "method": method, "config_sha256": full_digest(config)}

    def _path(self, seed: int, forget: tuple[int, ...], name: str, config) -> Path:
        return inside(self.root, f"seed{seed}/set{forget_sets.key(forget)}/{name}-{digest(config)}.json")  # no symlink out

    def _read(self, path: Path, stamp: dict) -> dict | None:
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or any(stored.get(k) != v or type(stored.get(k)) is not type(v)
                                               for k, v in stamp.items()):
            return None
        return stored

    def get(self, seed: int, forget: tuple[int, ...], method: str, config) -> dict | None:
        """The stored result, or None: absent, unreadable, recorded for another store key, seed, forget set,
        method or configuration, or not a valid result (see :func:`check_result`). It is then recomputed."""
        stored = self._read(self._path(seed, forget, method, config), self._stamp(seed, forget, method, config))
        if stored is None or check_result(stored, self.num_classes):
            return None
        nan = lambda v: math.nan if v is None else float(v)  # noqa: E731 (strict JSON: null)
        return {"metrics": {k: nan(v) for k, v in stored["metrics"].items()},
                "per_class_accuracy": [nan(v) for v in stored["per_class_accuracy"]],
                "forget_predictions": [float(v) for v in stored["forget_predictions"]],
                "forget_scores": [float(v) for v in stored["forget_scores"]]}

    def put(self, seed: int, forget: tuple[int, ...], method: str, config, result: dict) -> None:
        with self.lock:
            write_json(self.root / "store.json", self.inputs)  # rewritten each time: a damaged one is repaired
            write_json(self._path(seed, forget, method, config),
                       {**self._stamp(seed, forget, method, config), "config": config,
                        **{k: result[k] for k in ("metrics", "per_class_accuracy", "forget_predictions",
                                                  "forget_scores")}})

    def get_point(self, seed: int, forget: tuple[int, ...], method: str, config) -> dict[str, float] | None:
        """A stored tuning point (validation ``forget`` and ``retain`` accuracy, ``seconds``), or None."""
        stamp = self._stamp(seed, forget, f"tune-{method}", config)
        stored = self._read(self._path(seed, forget, f"tune-{method}", config), stamp)
        point = stored.get("point") if stored else None
        if not isinstance(point, dict) or set(point) != {"forget", "retain", "seconds"} or not all(
                _number(point[k], 0.0, 1.0) for k in ("forget", "retain")) or not (
                point["seconds"] is None or _number(point["seconds"], 0.0)):
            return None
        return {k: math.nan if v is None else float(v) for k, v in point.items()}

    def put_point(self, seed: int, forget: tuple[int, ...], method: str, config, point: dict[str, float]) -> None:
        with self.lock:
            write_json(self.root / "store.json", self.inputs)
            write_json(self._path(seed, forget, f"tune-{method}", config),
                       {**self._stamp(seed, forget, f"tune-{method}", config), "config": config, "point": point})

    def _round_path(self, seed: int, config) -> Path:
        return inside(self.root, f"seed{seed}/wf-round-{digest(config)}.safetensors")

    def get_round(self, seed: int, config, like: Mapping[str, torch.Tensor] | None = None
                  ) -> tuple[dict[str, torch.Tensor], float] | None:
        """WF's memory matrices after the round of ``seed`` and the round's seconds, or None (absent, unreadable,
        recorded for another store key, seed or configuration, non-finite, or, given ``like``, not its names
        and shapes)."""
        path = self._round_path(seed, config)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                memory = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
            seconds = float(meta.get("seconds", "nan"))
        except (SafetensorError, OSError, ValueError):
            return None
        stamp = self._stamp(seed, None, "wf-round", config)
        if any(meta.get(k) != str(v) for k, v in stamp.items()):
            return None
        if not (math.isnan(seconds) or (math.isfinite(seconds) and seconds >= 0)):
            return None
        if any(not v.dtype.is_floating_point or not bool(torch.isfinite(v).all()) for v in memory.values()):
            return None
        if like is not None and {k: tuple(v.shape) for k, v in memory.items()} != {k: tuple(v.shape)
                                                                                   for k, v in like.items()}:
            return None
        return {k: v.float() for k, v in memory.items()}, seconds

    def put_round(self, seed: int, config, memory: Mapping[str, torch.Tensor], seconds: float) -> None:
        tensors = {k: v.detach().cpu().float().contiguous() for k, v in memory.items()}
        meta = {k: str(v) for k, v in self._stamp(seed, None, "wf-round", config).items()}
        meta["seconds"] = "nan" if math.isnan(seconds) else repr(float(seconds))
        with self.lock:
            write_json(self.root / "store.json", self.inputs)
            atomic_write(self._round_path(seed, config), lambda tmp: save_file(tensors, tmp, metadata=meta))
