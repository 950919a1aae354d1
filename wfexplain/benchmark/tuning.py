"""Fair tuning: every method gets the same search budget on the validation split, chosen by a rule stated in advance.

Each method's grid (:attr:`wfexplain.methods.Method.grid`: the same number of configurations for every
method, over its steps and learning rate, or SSD's selection and dampening) is run on seed 0 for every
forget set, and each configuration's network is scored on the checkpoint's validation split only: the
accuracy on the forget set's validation images and on the others'. The rule (:data:`RULE`) then picks,
per forget set, the configuration closest to Retrain's on the same images. The test split is never read
here: :func:`tune` receives validation tensors only, and the benchmark loads the test images after it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import forget as forget_sets
from ..engine import Progress, StopFlag
from ..evaluation.metrics import forget_accuracy, retain_accuracy
from ..methods import get_method
from .store import RunStore
from .unlearning import Unlearner

RULE = ("per forget set, the grid point whose validation accuracies (on the forget set's images and on the others') "
        "are closest to Retrain's on the same images: distance = |Δ forget acc.| + |Δ retain acc.|; ties go to the "
        "first point in grid order (the fewest steps). WF trains one round for every class, so one point serves all "
        "sets: the one with the smallest mean distance. wf_removed is tuned per set on WF's chosen round. Seed 0.")
TUNED_ROLES = ("ours", "baseline")  # Retrain is the reference: its recipe is the checkpoint's


@dataclass(frozen=True)
class Validation:
    """The validation images every tuning point is scored on (never the test split)."""

    x: torch.Tensor
    y: torch.Tensor


@torch.no_grad()
def validation_point(net: nn.Module, val: Validation, forget: Sequence[int], batch: int = 500) -> dict[str, float]:
    """``{"forget", "retain"}``: the network's accuracy on the validation images of the forget set and of the others."""
    net.eval()
    device = next(net.parameters()).device
    pred = torch.cat([net(xb.to(device)).argmax(1).cpu() for xb in val.x.split(batch)])
    return {"forget": forget_accuracy(pred, val.y, forget), "retain": retain_accuracy(pred, val.y, forget)}


def distance(point: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """The rule's distance: ``|forget − forget_R| + |retain − retain_R|`` (accuracies as fractions)."""
    return abs(point["forget"] - reference["forget"]) + abs(point["retain"] - reference["retain"])


def base_configs(methods: Sequence[str], unlearn_config: Mapping[str, Any] | None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict]:
    """Each method's configuration before tuning: its defaults (WF: the checkpoint's ``unlearn_config``) with the
    user's fixed ``overrides``; the grid points vary some fields on top."""
    out = {}
    for m in methods:
        if get_method(m).role in TUNED_ROLES:
            default = dict(unlearn_config or {}) if m == "wf" else get_method(m).default_config()
            out[m] = {**default, **((overrides or {}).get(m) or {})}
    return out


def full_config(method: str, point: Mapping[str, Any], base: Mapping[str, Mapping[str, Any]],
                chosen_wf: Mapping[str, Any] | None = None) -> dict:
    """The configuration :meth:`Unlearner.make` takes for ``method`` at a grid ``point`` (see :func:`base_configs`);
    ``wf_removed`` runs on WF's round ``chosen_wf`` (default: WF's base)."""
    if method == "wf_removed":
        return {"wf": dict(chosen_wf or base["wf"]), "removal": {**base[method], **point}}
    return {**base[method], **point}


def tune(unlearner: Unlearner, methods: Sequence[str], sets: Sequence[tuple[int, ...]], val: Validation,
         base: Mapping[str, Mapping[str, Any]], grids: Mapping[str, Mapping[str, Sequence]] | None = None,
         store: RunStore | None = None, progress: Progress | None = None, should_stop: StopFlag | None = None,
         seed: int = 0) -> dict | None:
    """Run every grid point of every method on every set (seed ``seed``) and choose per :data:`RULE`.

    ``base``: each method's configuration before tuning (:func:`base_configs`); ``grids``: method -> grid replacing
    the registered one (e.g. smaller step counts for a quick run; every method must keep the same number of points).

    Returns:
        ``{"rule", "seed", "validation_images", "budget", "grids", "retrain", "points", "chosen", "seconds"}``:
        ``points[method][set]`` lists each point's config, validation accuracies, distance and seconds;
        ``chosen[method][set]`` the overrides chosen; ``budget[method]`` the number of points per set; ``seconds[method]``
        the unlearning time of all its points (as measured when each was computed; each WF round counted once).
        None when cancelled.
    """
    tuned = [m for m in methods if get_method(m).role in TUNED_ROLES]
    order = sorted(tuned, key=lambda m: (m != "wf", m != "wf_removed"))  # wf_removed needs WF's choice
    grid_of = {m: dict((grids or {}).get(m) or get_method(m).grid) for m in order}
    points_of = {m: [dict(zip(g, v, strict=True)) for v in itertools.product(*g.values())] for m, g in grid_of.items()}
    if len({len(p) for p in points_of.values()}) > 1:
        raise ValueError("every method must get the same tuning budget: grids of "
                         + ", ".join(f"{m} {len(p)}" for m, p in points_of.items()) + " points")
    total = len(sets) * (1 + sum(len(p) for p in points_of.values()))
    done = 0

    def tick(what: dict) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, what)

    reference: dict[str, dict[str, float]] = {}
    for s in sets:
        net, _ = unlearner.make("retrain", s, seed, None)
        if net is None:
            return None
        reference[forget_sets.key(s)] = validation_point(net, val, s)
        tick({"method": "retrain", "forget": list(s)})
    points: dict[str, dict[str, list[dict]]] = {}
    chosen: dict[str, dict[str, dict]] = {}
    spent: dict[str, float] = {}
    chosen_wf: dict | None = None
    for m in order:
        grid = points_of[m]
        points[m], spent[m] = {}, 0.0
        for s in sets:
            k = forget_sets.key(s)
            rows = []
            for p in grid:
                if should_stop and should_stop():
                    return None
                cfg = full_config(m, p, base, chosen_wf)
                row = store.get_point(seed, s, m, cfg) if store else None
                if row is None:
                    net, secs = unlearner.make(m, s, seed, cfg)
                    if net is None:
                        return None
                    row = {**validation_point(net, val, s), "seconds": secs}
                    if store:
                        store.put_point(seed, s, m, cfg, row)
                spent[m] += _own_seconds(unlearner, m, cfg, row["seconds"], seed)
                rows.append({"config": p, **row, "distance": distance(row, reference[k])})
                tick({"method": m, "forget": list(s), "config": p})
            points[m][k] = rows
        if m == "wf":  # its rounds, once each (every set's point above counted its baking only)
            spent[m] += sum(_finite(unlearner.round_seconds(seed, full_config(m, p, base))) for p in grid)
        chosen[m] = _choose(points[m], joint=m == "wf")
        if m == "wf":
            chosen_wf = full_config("wf", next(iter(chosen[m].values())), base)
    return {"rule": RULE, "seed": seed, "validation_images": len(val.y),
            "budget": {m: len(p) for m, p in points_of.items()},
            "grids": {m: {k: list(v) for k, v in g.items()} for m, g in grid_of.items()},
            "base": {m: dict(base[m]) for m in order},
            "retrain": reference, "points": points, "chosen": chosen, "seconds": spent}


def _choose(points: Mapping[str, list[dict]], joint: bool) -> dict[str, dict]:
    """Per set, the config of the row with the smallest distance (the first of ties); ``joint``: one config for every
    set, the one with the smallest mean distance over the sets."""
    if joint:
        rows = list(points.values())
        means = [sum(r[i]["distance"] for r in rows) / len(rows) for i in range(len(rows[0]))]
        best = rows[0][means.index(min(means))]["config"]
        return {k: dict(best) for k in points}
    return {k: dict(min(rows, key=lambda r: r["distance"])["config"]) for k, rows in points.items()}


def _finite(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _own_seconds(unlearner: Unlearner, method: str, cfg: Mapping[str, Any], seconds: float, seed: int) -> float:
    """A point's seconds without WF's round (a round serves every set and configuration of ``wf_removed`` on it)."""
    if method not in ("wf", "wf_removed"):
        return _finite(seconds)
    shared = unlearner.round_seconds(seed, cfg["wf"] if method == "wf_removed" else cfg)
    return max(_finite(seconds) - _finite(shared), 0.0)
