"""The benchmark's run store: every scored (seed, forget class, method) kept on disk as it finishes.

A full benchmark (every class, several seeds, a Retrain per class and seed) takes hours on a
CPU. With the store, an interrupted ``wfexplain benchmark`` resumes where it stopped, two
processes given disjoint ``--forget`` lists fill the same store, and a last run over all
classes only aggregates. Layout, beside the checkpoint::

    <checkpoint>/benchmark-runs/<key>/store.json                       what the key stands for
    <checkpoint>/benchmark-runs/<key>/seed<S>/wf-round-<cfg>.safetensors   WF's round (memory + seconds)
    <checkpoint>/benchmark-runs/<key>/seed<S>/class<C>/<method>-<cfg>.json one scored result

``<key>`` digests what every result depends on: the checkpoint's weight files, the test and
training images scored and the scoring code's version; ``<cfg>`` digests the method's own
configuration, so changing one baseline's hyperparameters recomputes that baseline only.
A stored result keeps the seconds measured when it was computed. Files are written atomically, as strict
JSON (a NaN metric is stored as null and read back as NaN).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write, write_json
from ..manifest import MEMORY_FILE, MODEL_FILE, Manifest

RUNS_DIR = "benchmark-runs"
SCORING_VERSION = 1  # bump when score() changes what a stored result means


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class RunStore:
    """Scored results of one checkpoint and one choice of scored images."""

    def __init__(self, checkpoint: str | os.PathLike, manifest: Manifest, limit: int | None, train_limit: int | None):
        """``manifest``: the checkpoint's (loaded, so its digests were checked): the key digests its weight files."""
        self.inputs = {"model_sha256": manifest.files[MODEL_FILE], "memory_sha256": manifest.files[MEMORY_FILE],
                       "limit": limit, "train_limit": train_limit, "scoring_version": SCORING_VERSION}
        self.root = Path(checkpoint) / RUNS_DIR / digest(self.inputs)

    def _result_path(self, seed: int, forget_class: int, method: str, config) -> Path:
        return self.root / f"seed{seed}" / f"class{forget_class}" / f"{method}-{digest(config)}.json"

    def get(self, seed: int, forget_class: int, method: str, config) -> dict | None:
        """The stored result, or None (absent or unreadable: it is then recomputed)."""
        path = self._result_path(seed, forget_class, method, config)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not (isinstance(result, dict) and isinstance(result.get("metrics"), dict)):
            return None
        result["metrics"] = {k: math.nan if v is None else v for k, v in result["metrics"].items()}  # strict JSON: null
        return result

    def put(self, seed: int, forget_class: int, method: str, config, result: dict) -> None:
        if not self.root.joinpath("store.json").is_file():
            write_json(self.root / "store.json", self.inputs)
        write_json(self._result_path(seed, forget_class, method, config), result)

    def _round_path(self, seed: int, config) -> Path:
        return self.root / f"seed{seed}" / f"wf-round-{digest(config)}.safetensors"

    def get_round(self, seed: int, config) -> tuple[dict[str, torch.Tensor], float] | None:
        """WF's memory matrices after the round of ``seed`` and the round's seconds, or None."""
        path = self._round_path(seed, config)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                seconds = float((f.metadata() or {}).get("seconds", "nan"))
            return load_file(str(path)), seconds
        except (SafetensorError, OSError, ValueError):
            return None

    def put_round(self, seed: int, config, memory: Mapping[str, torch.Tensor], seconds: float) -> None:
        tensors = {k: v.detach().cpu().float().contiguous() for k, v in memory.items()}
        meta = {"seconds": "nan" if math.isnan(seconds) else repr(float(seconds))}
        atomic_write(self._round_path(seed, config), lambda tmp: save_file(tensors, tmp, metadata=meta))
