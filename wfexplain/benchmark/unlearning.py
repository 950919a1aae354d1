"""How each method of the registry turns the original network into a plain network for one forget set.

:class:`Unlearner` is the one place the benchmark and its tuning run a method: Retrain loads or trains the
oracle, WF bakes the memory of a round for every class (one round per seed and configuration, kept in memory
and in the run store), ``wf_removed`` prunes and repairs WF's filtered network (:func:`wfexplain.removal.remove`),
and a baseline runs on the retain and forget images of the set. Each returns the network and the seconds a user
would wait for it (WF: its round plus the baking; ``wf_removed``: the round plus the removal).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from ..baselines import run_baseline
from ..configs import RemovalConfig, UnlearnConfig
from ..engine import StopFlag, reset_memory, train_memory
from ..evaluation.metrics import in_set
from ..filtering import FilteredModel, bake
from ..pipeline import load_oracle, retrain
from ..removal import remove
from .store import RunStore, digest

Net = tuple[nn.Module | None, float]  # (network, seconds); None: cancelled


def wf_config(manifest_config: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> dict:
    """WF's unlearning config for a benchmark: the checkpoint's (or the defaults) with ``overrides``."""
    return {**(manifest_config or {}), **(overrides or {})}


class Unlearner:
    """The networks every method makes of ``base`` (see the module doc).

    Args:
        checkpoint: the checkpoint directory (Retrain oracles live in it).
        base: the loaded checkpoint.
        train: the training split the methods unlearn on (the backbone's, its validation split left out).
        store: the run store keeping WF's rounds (None: nothing kept).
        wf_round: ``"run"`` trains WF's round per seed and configuration; ``"checkpoint"`` uses the checkpoint's
            memory (and its recorded time) for the checkpoint's own configuration.
        save_oracles: store Retrain oracles trained here.
        device: where Retrain trains (the others run where ``base`` is).
    """

    def __init__(self, checkpoint, base: FilteredModel, train, store: RunStore | None, wf_round: str = "run",
                 data_dir: str | None = None, save_oracles: bool = True, should_stop: StopFlag | None = None,
                 device: str = "cpu"):
        self.checkpoint, self.base, self.train, self.store = checkpoint, base, train, store
        self.wf_round, self.data_dir, self.save_oracles, self.should_stop = wf_round, data_dir, save_oracles, should_stop
        self.device = device
        self.manifest = base.checkpoint_manifest()
        self.num_classes = base.num_classes
        self._rounds: dict[tuple[int, str], tuple[FilteredModel, float]] = {}
        self.sources: dict[str, set[str]] = {"retrain": set(), "wf": set()}

    # ------------------------------------------------------------ WF

    def round_config(self, cfg: Mapping[str, Any]) -> dict:
        """What a WF round depends on, as the store keys it."""
        return {"unlearn": dict(cfg), "round": self.wf_round if dict(cfg) == self.manifest.unlearn_config else "run"}

    def wf_model(self, seed: int, cfg: Mapping[str, Any]) -> tuple[FilteredModel | None, float]:
        """WF's filtered model after the round of ``seed`` with unlearning config ``cfg``, and the round's seconds."""
        key = self.round_config(cfg)
        memo = (seed, digest(key))
        if memo in self._rounds:
            return self._rounds[memo]
        if key["round"] == "checkpoint":
            out = self.base, float(self.manifest.timings.get("unlearn_seconds", float("nan")))
            self.sources["wf"].add("checkpoint manifest (unlearn_seconds)")
            self._rounds[memo] = out
            return out
        model = copy.deepcopy(self.base)  # the same network and memory, trained afresh below
        stored = self.store.get_round(seed, key, model.memory) if self.store else None
        if stored is not None:
            memory, seconds = stored
            with torch.no_grad():
                for k, p in model.memory.items():
                    p.copy_(memory[k])
            self.sources["wf"].add("stored round of an earlier run (timed then)")
        else:
            reset_memory(model)
            r = train_memory(model, self.train, UnlearnConfig(**{**cfg, "seed": seed}), should_stop=self.should_stop)
            if r["cancelled"]:
                return None, r["seconds"]
            seconds = r["seconds"]
            if self.store:
                self.store.put_round(seed, key, model.memory, seconds)
            self.sources["wf"].add("measured in this run")
        self._rounds[memo] = model.eval(), seconds
        return self._rounds[memo]

    def round_seconds(self, seed: int, cfg: Mapping[str, Any]) -> float:
        """The seconds of WF's round of ``seed`` and ``cfg`` if it ran or is stored (never trains one; NaN else)."""
        key = self.round_config(cfg)
        if (seed, digest(key)) in self._rounds:
            return self._rounds[(seed, digest(key))][1]
        stored = self.store.get_round(seed, key) if self.store else None
        if stored is None:
            return float("nan")
        self.sources["wf"].add("stored round of an earlier run (timed then)")
        return stored[1]

    # ------------------------------------------------------------ every method

    def retain_forget(self, forget: tuple[int, ...]) -> tuple[Subset, Subset]:
        """The training images outside and inside the forget set."""
        m = in_set(torch.as_tensor(self.train.targets), forget)
        return (Subset(self.train, torch.nonzero(~m).flatten().tolist()),
                Subset(self.train, torch.nonzero(m).flatten().tolist()))

    def make(self, method: str, forget: tuple[int, ...], seed: int, cfg: Mapping[str, Any] | None) -> Net:
        """The network ``method`` makes of the original for ``forget`` with config ``cfg``, and its seconds.

        ``cfg``: a baseline's full hyperparameters; WF's unlearning config; ``wf_removed``:
        ``{"wf": WF's config, "removal": removal hyperparameters}``; ignored for Retrain and the original.
        """
        if method == "original":
            return self.base.backbone, float("nan")
        if method == "retrain":
            return self._oracle(forget, seed)
        if method in ("wf", "wf_removed"):
            assert cfg is not None
            model, round_seconds = self.wf_model(seed, cfg["wf"] if method == "wf_removed" else cfg)
            if model is None:
                return None, round_seconds
            start = time.perf_counter()
            if method == "wf":
                return bake(model, list(forget)), round_seconds + time.perf_counter() - start
            r = remove(model, list(forget), self.train, RemovalConfig(**{**cfg["removal"], "seed": seed}),
                       should_stop=self.should_stop)
            return (None if r["cancelled"] else r["model"]), round_seconds + r["seconds"]
        retain, forgotten = self.retain_forget(forget)
        r = run_baseline(method, self.base.backbone, retain, forgotten, self.num_classes, cfg=dict(cfg or {}),
                         seed=seed, should_stop=self.should_stop)
        return (None if r["cancelled"] else r["model"]), r["seconds"]

    def _oracle(self, forget: tuple[int, ...], seed: int) -> Net:
        net, secs, stale = load_oracle(self.checkpoint, self.manifest, list(forget), seed)
        if net is not None:
            self.sources["retrain"].add("stored oracle (its manifest's train_seconds)")
            return net.to(self.device), secs
        r = retrain(self.checkpoint, list(forget), seed, self.data_dir, should_stop=self.should_stop,
                    save=self.save_oracles, device=self.device, overwrite=stale)
        self.sources["retrain"].add("measured in this run")
        return (None if r["cancelled"] else r["model"]), r["seconds"]

