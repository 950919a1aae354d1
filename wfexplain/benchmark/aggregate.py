"""From scored runs to the benchmark's numbers: the attack against Retrain, means and spreads, cost at parity.

Pure functions on the runner's results (``results[method][set key]`` = one scored result per seed, in seed
order): :func:`add_attack` fills the attack's metrics, :func:`aggregate` gives the per-set and per-size
tables of ``benchmark.json``, :func:`cost_at_parity` the seconds each method needs to answer K requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .catalogue import METRICS
from .scoring import attack_metrics

Results = dict[str, dict[str, list[dict]]]  # method -> forget-set key -> one result per seed


def requests(num_classes: int) -> dict[int, int]:
    """The K requests of each size that cost at parity answers: every single class, every pair, and 20 triples (all of
    them when there are fewer): ``{1: 10, 2: 45, 3: 20}`` for ten classes."""
    return {1: num_classes, 2: math.comb(num_classes, 2), 3: min(20, math.comb(num_classes, 3))}


def stats(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of the finite values (population std); NaN mean and std when there are none."""
    t = torch.tensor(list(values), dtype=torch.float64)
    t = t[~t.isnan()]
    if len(t) == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": t.mean().item(), "std": t.std(unbiased=False).item(), "n": len(t)}


def add_attack(results: Results) -> None:
    """Set each result's attack metrics against the Retrain result of the same set and seed (in place).

    Retrain's own row is scored against the Retrain of the next seed of the same set (the noise floor between two
    oracles; NaN with one seed). Without a Retrain result (e.g. not run) the attack's metrics are NaN.
    """
    oracle = results.get("retrain", {})
    for method, by_set in results.items():
        for key, runs in by_set.items():
            refs = oracle.get(key, [])
            for seed, r in enumerate(runs):
                if method == "retrain":
                    other = refs[(seed + 1) % len(refs)] if len(refs) > 1 else None
                    ref = other["forget_scores"] if other else None
                else:
                    ref = refs[seed]["forget_scores"] if seed < len(refs) else None
                r["metrics"].update(attack_metrics(r.get("forget_scores"), ref, seed=seed))


def _summary(runs: Sequence[dict]) -> dict[str, dict[str, float]]:
    return {k: stats([r["metrics"].get(k, math.nan) for r in runs]) for k in METRICS}


def aggregate(results: Results, sets: Sequence[tuple[int, ...]], key) -> dict:
    """``{"methods", "per_set", "by_size"}``: the mean over single classes, each set, and each set size.

    ``methods[m][metric]`` and ``by_size[size][m][metric]`` are ``{mean, std, n}`` over every (set, seed) run
    of that size; ``per_set[set key][m]`` holds the metrics over seeds, the mean per-class accuracy and the
    mean prediction distribution on the set's first class.
    """
    per_set: dict[str, dict[str, dict]] = {}
    for s in sets:
        k = key(s)
        per_set[k] = {}
        for m, by_set in results.items():
            runs = by_set.get(k, [])
            if not runs:
                continue
            per_set[k][m] = {
                "metrics": _summary(runs),
                "per_class_accuracy": torch.tensor([r["per_class_accuracy"] for r in runs]).nanmean(0).tolist(),
                "forget_predictions": torch.tensor([r["forget_predictions"] for r in runs]).mean(0).tolist(),
            }
    by_size: dict[str, dict[str, dict]] = {}
    for size in sorted({len(s) for s in sets}):
        keys = [key(s) for s in sets if len(s) == size]
        by_size[str(size)] = {m: _summary([r for k in keys for r in by_set.get(k, [])]) for m, by_set in results.items()}
    return {"methods": by_size.get("1", {}), "per_set": per_set, "by_size": by_size}


def cost_at_parity(by_size: Mapping[str, Mapping[str, Mapping[str, dict]]], wf_round_seconds: float,
                   asked: Mapping[int, int]) -> dict:
    """Seconds each method needs to answer ``asked[size]`` forget requests of each size (:func:`requests`), against
    one WF round for every class.

    A request's cost is the method's mean measured seconds on sets of that size (``by_size``); a size not
    benchmarked uses the single-class time and is marked ``extrapolated``. WF and ``wf_removed`` pay their round
    once (``wf_round_seconds``, every class at once) and then, per request, only what follows it (baking,
    removal): their per-request time minus the round. Returns ``{"requests", "wf_round_seconds", "methods":
    {method: {size: {"seconds", "extrapolated"}}}, "totals": {method: seconds for all requests}}``.
    """
    methods = sorted({m for table in by_size.values() for m in table if m != "original"})
    out: dict[str, dict[str, dict]] = {}
    totals: dict[str, float] = {}
    for m in methods:
        out[m], total = {}, 0.0
        once = wf_round_seconds if m in ("wf", "wf_removed") else 0.0
        for size, k in asked.items():
            table = by_size.get(str(size)) or {}
            measured = m in table and not math.isnan(table[m]["seconds"]["mean"])
            source = table if measured else (by_size.get("1") or {})
            per = source.get(m, {}).get("seconds", {}).get("mean", math.nan)
            per = max(per - once, 0.0) if m in ("wf", "wf_removed") else per
            out[m][str(size)] = {"seconds": k * per, "extrapolated": not measured}
            total += k * per
        totals[m] = once + total
    return {"requests": {str(k): v for k, v in asked.items() if v}, "wf_round_seconds": wf_round_seconds,
            "methods": out, "totals": totals}
