"""The checkpoint manifest (``manifest.json``): a typed, validated, frozen record.

A checkpoint directory holds ``model.safetensors`` (the backbone), ``memory.safetensors`` (the
memory matrices of Poppi et al., arXiv 2304.02049: one ``[classes, components]`` matrix per gated
layer) and this manifest. :meth:`Manifest.from_json` checks the type and range of every field
(bounded channels, image side and class count, so nothing huge is ever allocated from a manifest)
and is the only reader; :meth:`Manifest.to_json` the only writer. The SHA-256 of both weight files
is mandatory. Format history: version 1 (digests optional, ``retrain_of`` a path, ``forget`` at the
top level) is read and upgraded in memory when it records digests; version 2 is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, overload

from torch import nn

from .backbones import build_network, check_spec
from .configs import TrainConfig, UnlearnConfig
from .construction import BuildRefused, BuildTimeout
from .data import DatasetInfo
from .sites import KINDS

FORMAT = "wfexplain-checkpoint"
FORMAT_VERSION = 2
MODEL_FILE, MEMORY_FILE, MANIFEST_FILE = "model.safetensors", "memory.safetensors", "manifest.json"
WEIGHT_FILES = (MODEL_FILE, MEMORY_FILE)
MAX_IN_CHANS = 16
IMG_SIZE_RANGE = (4, 1024)
MAX_CLASSES = 10_000
MAX_COMPONENTS = 1 << 20  # per gated layer
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match its manifest."""


@dataclass(frozen=True)
class Manifest:
    """Everything a checkpoint directory records besides its tensors."""

    backbone: str  # architecture spec: a registered backbone, timm:NAME, torchvision:NAME or package.module:factory
    dataset: DatasetInfo  # classes and preprocessing
    memory_shapes: dict[str, tuple[int, int]]  # gated layer -> (classes, components)
    files: dict[str, str]  # weight file name -> SHA-256 (hex)
    storage_dtype: str = "float32"  # backbone tensors on disk: float32 or float16
    train_config: dict | None = None  # TrainConfig fields the backbone was trained with
    unlearn_config: dict | None = None  # UnlearnConfig fields of the memory (None: not unlearned yet)
    seed: int | None = None
    backbone_description: str = ""
    train_images: int | None = None  # training images used (a --limit-train subset or the whole split)
    dataset_fingerprint: dict[str, str] | None = None  # split -> content hash
    metrics: dict = field(default_factory=dict)  # free-form, strict JSON
    timings: dict = field(default_factory=dict)  # seconds of each stage
    retrain_of: dict | None = None  # Retrain oracles: {"model_sha256", "forget", "seed"} of their checkpoint
    versions: dict[str, str] = field(default_factory=dict)  # package versions that wrote it
    arch_kwargs: dict = field(default_factory=dict)  # keyword arguments of the architecture spec (``backbone``)
    heads: list[str] | None = None  # classifier head path(s); None: found automatically
    sites: list[dict] | None = None  # gate sites ({path, kind, size, head_dim}); None: discovered automatically
    data_dir: str | None = None  # where the dataset lives (used when no --data-dir is given)
    validation: dict | None = None  # held-out training images {images, seed, sha256, seen_by_backbone}

    @property
    def unlearned(self) -> bool:
        return self.unlearn_config is not None

    def replace(self, **changes) -> Manifest:
        return dataclasses.replace(self, **changes)

    def recorded(self) -> dict:
        """The fields a writer passes on (those :func:`~wfexplain.checkpoint.save_checkpoint` derives left out)."""
        derived = {"backbone", "dataset", "memory_shapes", "files", "storage_dtype", "versions", "arch_kwargs", "heads",
                   "sites"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in derived}

    def build_network(self, expect: Mapping[str, tuple[int, ...]], trust: bool = False) -> nn.Module:
        """The one way to build the (randomly initialised) network a manifest describes.

        ``expect``: the names and shapes its weights hold (the safetensors header): construction is
        bounded by them (:func:`wfexplain.backbones.build_network`), so a manifest cannot make us
        allocate, or spend minutes on, a network its weight file does not hold. ``trust`` is the
        *user's* permission to import a ``package.module:factory`` (else ``$WFEXPLAIN_TRUSTED_MODULES``);
        a manifest never grants it. A refusal by size or shape is remembered for this spec, its arguments
        and these shapes, so asking again costs nothing (one by time is not: a busy machine may succeed).

        Raises:
            BuildRefused: past the budget, or other tensors than ``expect``; ValueError: the spec cannot be built.
        """
        info = self.dataset
        key = hashlib.sha256(json.dumps([self.backbone, self.arch_kwargs, info.num_classes, info.in_chans, info.img_size,
                                         sorted((k, list(v)) for k, v in expect.items())]).encode()).hexdigest()
        with _REFUSED_LOCK:
            known = _REFUSED.get(key)
        if known is not None:
            raise BuildRefused(f"{known} (refused before)")
        try:
            return build_network(self.backbone, info.num_classes, info.in_chans, info.img_size, self.arch_kwargs,
                                 trust=trust, expect=expect)
        except BuildTimeout:
            raise
        except BuildRefused as e:
            with _REFUSED_LOCK:
                _REFUSED[key] = str(e)
                while len(_REFUSED) > 256:
                    _REFUSED.popitem(last=False)
            raise

    def to_json(self) -> dict:
        d = self.dataset
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "backbone": self.backbone,
            "dataset": {"name": d.name, "class_names": list(d.class_names), "in_chans": d.in_chans,  # defaults unwritten
                        "img_size": list(d.input_hw) if d.img_width else d.img_size, "mean": list(d.mean),
                        "std": list(d.std), **{k: getattr(d, k) for k in _DEFAULTS if getattr(d, k) != _DEFAULTS[k]}},
            "storage_dtype": self.storage_dtype,
            "memory_shapes": {k: list(v) for k, v in self.memory_shapes.items()},
            "files": {name: {"sha256": digest} for name, digest in self.files.items()},
            "train_config": self.train_config, "unlearn_config": self.unlearn_config, "seed": self.seed,
            "backbone_description": self.backbone_description, "train_images": self.train_images,
            "dataset_fingerprint": self.dataset_fingerprint, "metrics": self.metrics, "timings": self.timings,
            "retrain_of": self.retrain_of, "versions": self.versions, "arch_kwargs": self.arch_kwargs,
            "heads": self.heads, "sites": self.sites, "data_dir": self.data_dir,
            "validation": self.validation,
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = MANIFEST_FILE, require_digests: bool = True) -> Manifest:
        """Validate a parsed ``manifest.json``; every problem is a :class:`CheckpointError` naming ``path``."""
        return _Reader(str(path)).read(obj, require_digests)


_REFUSED: OrderedDict[str, str] = OrderedDict()  # digest of spec, arguments and expected shapes -> why it was refused
_REFUSED_LOCK = threading.Lock()
_KNOWN = {f.name for f in dataclasses.fields(Manifest)} | {"format", "format_version"}
_DEFAULTS = {"interpolation": "bilinear", "crop_pct": None}  # the resize of format 2 before they were recorded
_DATASET_KEYS = {"name", "class_names", "in_chans", "img_size", "mean", "std", *_DEFAULTS}


class _Reader:
    def __init__(self, path: str):
        self.path = path

    def fail(self, msg: str) -> NoReturn:
        raise CheckpointError(f"{self.path}: {msg}")

    def typed(self, obj: dict, key: str, kinds, optional: bool = False):
        if key not in obj:
            if optional:
                return None
            self.fail(f"lacks the field {key!r}")
        v = obj[key]
        if v is None and optional:
            return None
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            self.fail(f"{key} must be {names}{' or null' if optional else ''}, found {type(v).__name__} {_short(v)}")
        return v

    @overload
    def int_in(self, obj: dict, key: str, lo: int, hi: int, optional: Literal[False] = False) -> int: ...
    @overload
    def int_in(self, obj: dict, key: str, lo: int, hi: int, optional: bool) -> int | None: ...

    def int_in(self, obj: dict, key: str, lo: int, hi: int, optional: bool = False) -> int | None:
        v = self.typed(obj, key, int, optional)
        if v is not None and not lo <= v <= hi:
            self.fail(f"{key} must be in {lo}..{hi:,}, found {v:,}")
        return v

    def read(self, obj: Any, require_digests: bool) -> Manifest:
        if not isinstance(obj, dict):
            self.fail(f"must be a JSON object, found {type(obj).__name__ if obj is not None else 'null'}")
        if obj.get("format") != FORMAT:
            self.fail(f"format is {_short(obj.get('format'))}, expected {FORMAT!r}")
        version = obj.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            self.fail(f"format_version must be a positive integer, found {_short(version)}")
        if version > FORMAT_VERSION:
            self.fail(f"format_version {version} is newer than this wfexplain supports ({FORMAT_VERSION}); upgrade wfexplain")
        obj = _from_v1(obj) if version == 1 else obj
        unknown = sorted(set(obj) - _KNOWN)
        if unknown:
            self.fail(f"unknown field(s) {', '.join(map(repr, unknown[:5]))}")
        backbone = self.typed(obj, "backbone", str)
        try:
            check_spec(backbone)
        except ValueError as e:
            self.fail(str(e))
        info = _Reader(f"{self.path}, dataset").dataset(self.typed(obj, "dataset", dict))
        storage = self.typed(obj, "storage_dtype", str, optional=True) or "float32"
        if storage not in ("float32", "float16"):
            self.fail(f"storage_dtype must be 'float32' or 'float16', found {_short(storage)}")
        shapes = self.memory_shapes(self.typed(obj, "memory_shapes", dict), info.num_classes)
        files = self.files(obj.get("files"), require_digests)
        configs = {}
        for key, cls in (("train_config", TrainConfig), ("unlearn_config", UnlearnConfig)):
            cfg = self.typed(obj, key, dict, optional=True)
            if cfg is not None:
                try:
                    cls(**cfg)
                except (TypeError, ValueError) as e:
                    self.fail(f"{key} is not a valid {cls.__name__}: {e}")
            configs[key] = cfg
        fingerprint = self.typed(obj, "dataset_fingerprint", dict, optional=True)
        versions = self.typed(obj, "versions", dict, optional=True) or {}
        for key, d in (("dataset_fingerprint", fingerprint or {}), ("versions", versions)):
            if not all(isinstance(v, str) for v in d.values()):
                self.fail(f"{key} must map names to strings")
        return Manifest(
            backbone=backbone, dataset=info, memory_shapes=shapes, files=files, storage_dtype=storage, **configs,
            seed=self.int_in(obj, "seed", 0, 2**63 - 1, optional=True),
            backbone_description=self.typed(obj, "backbone_description", str, optional=True) or "",
            train_images=self.int_in(obj, "train_images", 1, 10**12, optional=True),
            dataset_fingerprint=fingerprint,
            metrics=self.typed(obj, "metrics", dict, optional=True) or {},
            timings=self.typed(obj, "timings", dict, optional=True) or {},
            retrain_of=self.retrain_of(obj.get("retrain_of"), info.num_classes), versions=versions,
            arch_kwargs=self.typed(obj, "arch_kwargs", dict, optional=True) or {},
            heads=self.strings(obj, "heads"), sites=self.sites(obj.get("sites"), shapes),
            data_dir=self.typed(obj, "data_dir", str, optional=True),
            validation=self.validation(obj.get("validation")),
        )

    def strings(self, obj: dict, key: str) -> list[str] | None:
        v = self.typed(obj, key, list, optional=True)
        if v is not None and not (v and all(isinstance(x, str) and x for x in v)):
            self.fail(f"{key} must list module paths, found {_short(v)}")
        return v

    def sites(self, v: Any, shapes: dict[str, tuple[int, int]]) -> list[dict] | None:
        if v is None:
            return None
        keys = {"path", "kind", "size", "head_dim"}
        if not isinstance(v, list) or not all(isinstance(s, dict) and set(s) == keys for s in v):
            self.fail(f"sites must list {{{', '.join(sorted(keys))}}} objects, found {_short(v)}")
        for s in v:
            if s["kind"] not in KINDS or not all(isinstance(s[k], int) and not isinstance(s[k], bool)
                                                 and 1 <= s[k] <= MAX_COMPONENTS for k in ("size", "head_dim")):
                self.fail(f"site {_short(s)}: kind must be one of {', '.join(KINDS)}, size and head_dim in "
                          f"1..{MAX_COMPONENTS:,}")
        if [s["path"] for s in v] != list(shapes) or any(shapes[s["path"]][1] != s["size"] for s in v):
            self.fail("sites do not match memory_shapes (paths, order or sizes)")
        return v

    def dataset(self, ds: dict) -> DatasetInfo:
        name = self.typed(ds, "name", str)
        names = self.typed(ds, "class_names", list)
        if not 2 <= len(names) <= MAX_CLASSES or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names):
            self.fail(f"class_names must list 2..{MAX_CLASSES:,} non-empty strings, found {len(names):,} entries")
        if len(set(names)) != len(names):
            self.fail("class_names has duplicates")
        if set(ds) - _DATASET_KEYS:
            self.fail(f"unknown field(s) {', '.join(map(repr, sorted(set(ds) - _DATASET_KEYS)[:5]))}")
        in_chans = self.int_in(ds, "in_chans", 1, MAX_IN_CHANS)
        hw = ds.get("img_size")  # a side, or [height, width]
        hw = hw if isinstance(hw, list) and len(hw) == 2 else [self.int_in(ds, "img_size", *IMG_SIZE_RANGE)] * 2
        for side in hw:
            self.int_in({"img_size": side}, "img_size", *IMG_SIZE_RANGE)
        stats = []
        for key in ("mean", "std"):
            v = self.typed(ds, key, list)
            if len(v) != in_chans or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                             and math.isfinite(x) for x in v):
                self.fail(f"{key} must list {in_chans} finite number(s) (one per channel), found {_short(v)}")
            stats.append(tuple(float(x) for x in v))
        if min(stats[1]) <= 0:
            self.fail(f"std must be positive, found {list(stats[1])}")
        crop, interpolation = self.typed(ds, "crop_pct", (int, float), True), self.typed(ds, "interpolation", str, True)
        try:  # DatasetInfo checks crop_pct (0 < it <= 1, bounded resize) and interpolation (INTERPOLATIONS)
            return DatasetInfo(name, tuple(names), in_chans, hw[0], stats[0], stats[1], interpolation or "bilinear", crop,
                               hw[1])
        except ValueError as e:
            self.fail(str(e))

    def memory_shapes(self, shapes: dict, num_classes: int) -> dict[str, tuple[int, int]]:
        out = {}
        for k, v in shapes.items():
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                    and v[0] == num_classes and 1 <= v[1] <= MAX_COMPONENTS):
                self.fail(f"memory_shapes[{k!r}] must be [{num_classes}, 1..{MAX_COMPONENTS:,}], found {_short(v)}")
            out[k] = (v[0], v[1])
        if not out:
            self.fail("memory_shapes is empty")
        return out

    def files(self, files: Any, required: bool) -> dict[str, str]:
        files = files if isinstance(files, dict) else {}
        out = {}
        for name in WEIGHT_FILES:
            entry = files.get(name)
            digest = entry.get("sha256") if isinstance(entry, dict) else None
            if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
                if not required:  # lenient reading (upgrade): the digest gets recorded anew
                    continue
                self.fail(f"records no valid SHA-256 of {name} (files.{name}.sha256 is {_short(digest)}); digests are "
                          f"mandatory. If you trust the files, `wfexplain upgrade --checkpoint DIR` records them")
            out[name] = digest
        return out

    def validation(self, v: Any) -> dict | None:
        if v is None:
            return None
        ok = (isinstance(v, dict) and set(v) == {"images", "seed", "sha256", "seen_by_backbone"}
              and all(isinstance(v[k], int) and not isinstance(v[k], bool) and v[k] >= (k == "images")
                      for k in ("images", "seed"))
              and isinstance(v["sha256"], str) and re.fullmatch(r"[0-9a-f]{16}", v["sha256"]) is not None
              and isinstance(v["seen_by_backbone"], bool))
        if not ok:
            self.fail(f"validation must be {{images ≥ 1, seed ≥ 0, sha256 (16 hex), seen_by_backbone}}, found {_short(v)}")
        return v

    def retrain_of(self, v: Any, num_classes: int) -> dict | None:
        if v is None:
            return None
        ok = (isinstance(v, dict) and set(v) == {"model_sha256", "forget", "seed"}
              and isinstance(v["model_sha256"], str) and (_SHA256.fullmatch(v["model_sha256"]) or v["model_sha256"] == "")
              and isinstance(v["forget"], list) and all(isinstance(c, int) and 0 <= c < num_classes for c in v["forget"])
              and isinstance(v["seed"], int))
        if not ok:
            self.fail(f"retrain_of must be {{model_sha256, forget, seed}}, found {_short(v)}")
        return v


def _from_v1(obj: dict) -> dict:
    """Version 1 -> 2: oracles recorded their checkpoint's path and ``forget`` at the top level."""
    obj = {k: v for k, v in obj.items() if k not in ("format", "format_version")}
    if obj.get("retrain_of") is not None or "forget" in obj:
        forget = obj.pop("forget", [])
        obj["retrain_of"] = {"model_sha256": "", "forget": forget if isinstance(forget, list) else [],
                             "seed": obj.get("seed") if isinstance(obj.get("seed"), int) else 0}
    return obj


def _short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 1] + "…"
