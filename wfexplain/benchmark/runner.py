"""Compare weight filtering with the Retrain oracle and five baseline unlearning methods.

Every method turns the same original network into a plain network for one forget set:
Retrain trains from scratch without the forget classes, WF bakes the memory matrices
(:func:`wfexplain.filtering.bake`, no training per class), the baselines of
:mod:`wfexplain.baselines` fine-tune a copy. Each result is scored with the metrics of
:mod:`wfexplain.evaluation.metrics` (docs/benchmark.md) and shown as its gap to Retrain.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from .. import forget as forget_sets
from ..backbones import BuildRefused, weight_shapes
from ..baselines import default_config, run_baseline
from ..checkpoint import CheckpointError, Manifest, load, package_versions, read_tensors
from ..configs import UnlearnConfig
from ..data import subset_tensors
from ..engine import Progress, StopFlag, reset_memory, train_memory
from ..filtering import FilteredModel, bake
from ..pipeline import load_oracle, retrain
from ..splits import checkpoint_split, checkpoint_train_split
from .catalogue import BENCHMARK_FILE, METHODS, METRICS
from .reports import write_benchmark
from .scoring import Probe, _outputs, score
from .store import RunStore

# ---------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark runs and where its results go.

    Attributes:
        forget_classes: classes forgotten one at a time (default: all).
        seeds: seeds 0..seeds-1; every method (Retrain and the WF round included) reruns per seed.
        methods: subset of :data:`METHODS` (default: all; Retrain is always run, it is the reference).
        limit: test images (seeded, class-stratified; default: the whole test split).
        train_limit: training images the train-split metrics, the MIA and the probe use.
        wf_round: ``"run"`` reruns WF's unlearning round (all classes at once) per seed and times
            it; ``"checkpoint"`` uses the checkpoint's memory and the round time in its manifest.
        extra: bring your own: method name -> safetensors state dict of the same backbone that
            forgot the (single) forget class elsewhere; scored like the others, no time.
        data_dir: the dataset's directory (default: the one the checkpoint recorded).
        out: directory for ``benchmark.json``/``.md``/``.tex`` (``"auto"``: the checkpoint; None: write nothing).
        save_oracles: store Retrain oracles trained here under ``<checkpoint>/retrain/`` (reused next time).
        overrides: baseline name -> hyperparameters that replace its defaults (stored in ``config``).
        resume: keep every scored result (and WF round) in the checkpoint's run store
            (:mod:`wfexplain.benchmark.store`) and reuse stored ones; False computes everything and stores nothing.
        force: replace an existing ``benchmark.json`` that covers classes or seeds this run does not
            (without it that is a ``FileExistsError``, raised before any work).
        command: the command line, recorded in ``benchmark.json``.
    """

    forget_classes: tuple[int, ...] | None = None
    seeds: int = 3
    methods: tuple[str, ...] | None = None
    limit: int | None = None
    train_limit: int = 10_000
    wf_round: str = "run"
    extra: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    out: str | None = "auto"
    save_oracles: bool = True
    overrides: dict[str, dict] = field(default_factory=dict)
    resume: bool = True
    force: bool = False
    command: str = ""


def run_benchmark(checkpoint: str | os.PathLike, config: BenchmarkConfig = BenchmarkConfig(),
                  progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict | None:
    """Run every method on every forget class (one at a time) and seed; aggregate mean and std.

    Returns:
        The ``benchmark.json`` dict (docs/formats.md), or None when cancelled.
    """
    forget_classes, seeds, methods, limit, train_limit = (config.forget_classes, config.seeds, config.methods,
                                                          config.limit, config.train_limit)
    wf_round, extra, data_dir, out, save_oracles = (config.wf_round, config.extra, config.data_dir, config.out,
                                                    config.save_oracles)
    overrides, resume, force, command = config.overrides, config.resume, config.force, config.command
    base = load(checkpoint)
    manifest, info, n = base.checkpoint_manifest(), base.info, base.num_classes
    classes = forget_sets.classes(forget_classes if forget_classes is not None else range(n), n, allow_empty=False)
    chosen = ["retrain", *[m for m in (methods or METHODS) if m != "retrain"]]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer ≥ 1, got {seeds!r}")
    if out is not None and not force:
        _check_replaces_less(Path(checkpoint) if out == "auto" else Path(out), classes, seeds)
    if wf_round not in ("run", "checkpoint"):
        raise ValueError(f"wf_round must be 'run' or 'checkpoint', got {wf_round!r}")
    if "wf" in chosen and not manifest.unlearned:
        raise ValueError(f"{checkpoint} has no memory matrices yet: run `wfexplain unlearn --checkpoint {checkpoint}` first")
    overrides = overrides or {}
    byo = {name: _load_state(manifest, path) for name, path in (extra or {}).items()}
    if byo and len(classes) != 1:
        raise ValueError("a network brought from elsewhere forgot one class: pass exactly one forget class with it")

    train = checkpoint_train_split(manifest, data_dir)
    test = checkpoint_split(manifest, "test", data_dir)
    data = Probe(*subset_tensors(test, limit)[:2], *subset_tensors(train, train_limit)[:2])
    total = len(classes) * seeds * (len(chosen) + len(byo)) + (seeds if "wf" in chosen and wf_round == "run" else 0)
    done = 0

    def tick(**what):
        nonlocal done
        done += 1
        if progress:
            progress(done, total, what)

    def stop() -> bool:
        return bool(should_stop and should_stop())

    configs = {"original": None, **_configs(manifest, chosen, overrides)}
    if "wf" in configs:  # WF's results depend on how its memory was obtained too
        configs["wf"] = {"unlearn": configs["wf"], "round": wf_round}
    # keyed by the weights, the exact images scored and the training split unlearned on (another --data-dir: another store)
    store = RunStore(checkpoint, manifest, limit, train_limit, data, train) if resume else None
    runs: dict[str, dict[int, list[dict]]] = {m: {c: [] for c in classes} for m in ["original", *chosen, *byo]}
    times: dict[str, list[float]] = {m: [] for m in runs}
    wf_seconds: list[float] = []
    sources: dict[str, set[str]] = {"retrain": set(), "wf": set()}
    for seed in range(seeds):
        torch.manual_seed(10_000 + seed)
        random_net = manifest.build_network(weight_shapes(base.backbone)).eval()
        wf_model = None
        if "wf" in chosen:
            wf_model, secs, source = _wf_round(checkpoint, base, train, seed, wf_round, should_stop, store, configs["wf"])
            if wf_model is None:
                return None
            wf_seconds.append(secs)
            sources["wf"].add(source)
            if wf_round == "run":
                tick(method="wf round", seed=seed)
        for c in classes:
            p_random = None
            for m in ["original", *chosen, *byo]:
                if stop():
                    return None
                result = store.get(seed, c, m, configs[m]) if store and m in configs else None
                if result is not None:
                    if m == "retrain":  # WF's cost is its round's (above)
                        sources["retrain"].add("stored result of an earlier run (timed then)")
                else:
                    net, secs = _unlearn(m, c, seed, checkpoint, base, (wf_model, wf_seconds[-1] if wf_seconds else 0.0),
                                         train, byo, n, configs, data_dir, should_stop, save_oracles, sources)
                    if net is None:
                        return None
                    if p_random is None:  # the random network's output on this class, once
                        p_random, _ = _outputs(random_net, data.x_train[data.y_train == c])
                    result = score(net, base.heads, data, [c], n, p_random, seed)
                    result["metrics"]["seconds"] = secs
                    if store and m in configs:
                        store.put(seed, c, m, configs[m], result)
                runs[m][c].append(result)
                times[m].append(result["metrics"]["seconds"])
                if m != "original":
                    tick(method=m, forget_class=c, seed=seed)

    bench = _aggregate(runs, classes)
    retrain_one = _nanmean(times["retrain"])
    wf_all = _nanmean(wf_seconds) if wf_seconds else float("nan")
    bench = {
        "checkpoint": str(checkpoint), "weights": dict(manifest.files),  # file -> SHA-256: what was benchmarked
        "dataset": info.name, "backbone": manifest.backbone,
        "class_names": list(info.class_names), "forget_classes": classes, "seeds": seeds,
        "num_test_images": len(data.y_test), "num_train_images_scored": len(data.y_train),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
        **bench,
        "cost": {
            "wf_all_classes_seconds": wf_all, "retrain_one_class_seconds": retrain_one,
            "ratio": wf_all / retrain_one if retrain_one else float("nan"),
            "one_class_seconds": {m: _nanmean(times[m]) for m in chosen},
            "wf_seconds_source": " + ".join(sorted(sources["wf"])),
            "retrain_seconds_source": " + ".join(sorted(sources["retrain"])),
        },
        "config": _configs(manifest, chosen, overrides),
        "versions": package_versions(),
    }
    if out is not None:
        write_benchmark(bench, Path(checkpoint) if out == "auto" else Path(out))
    return bench


def _wf_round(checkpoint, base: FilteredModel, train, seed: int, wf_round: str, should_stop,
              store: RunStore | None, config) -> tuple[FilteredModel | None, float, str]:
    """WF's model for ``seed``: the checkpoint's memory, a stored round or a new round (all classes at once)."""
    manifest = base.checkpoint_manifest()
    if wf_round == "checkpoint":
        return base, float(manifest.timings.get("unlearn_seconds", float("nan"))), \
            "checkpoint manifest (unlearn_seconds)"
    model = copy.deepcopy(base)  # the same network and memory, trained afresh below
    stored = store.get_round(seed, config, model.memory) if store else None  # validated: names, shapes, finite
    if stored is not None:
        memory, seconds = stored
        with torch.no_grad():
            for k, p in model.memory.items():
                p.copy_(memory[k])
        return model.eval(), seconds, "stored round of an earlier run (timed then)"
    reset_memory(model)
    assert manifest.unlearn_config is not None  # run_benchmark runs WF only on a checkpoint with memory matrices
    cfg = UnlearnConfig(**{**manifest.unlearn_config, "seed": seed})
    r = train_memory(model, train, cfg, should_stop=should_stop)
    if r["cancelled"]:
        return None, r["seconds"], ""
    if store:
        store.put_round(seed, config, model.memory, r["seconds"])
    return model.eval(), r["seconds"], "measured in this run"


def _unlearn(method: str, c: int, seed: int, checkpoint, base: FilteredModel, wf: tuple[FilteredModel | None, float],
             train, byo: dict[str, nn.Module], n: int, configs: dict, data_dir, should_stop, save_oracles: bool,
             sources: dict[str, set[str]]) -> tuple[nn.Module | None, float]:
    """The network ``method`` makes of the original for forget class ``c`` and its seconds (None: cancelled).

    ``wf``: the seed's WF model and round seconds; WF's time for one class is the round plus baking.
    """
    if method == "original":
        return base.backbone, float("nan")
    if method in byo:
        return byo[method], float("nan")
    if method == "retrain":
        net, secs, stale = load_oracle(checkpoint, base.checkpoint_manifest(), [c], seed)
        if net is not None:
            sources["retrain"].add("stored oracle (its manifest's train_seconds)")
            return net, secs
        r = retrain(checkpoint, [c], seed, data_dir, should_stop=should_stop, save=save_oracles, overwrite=stale)
        sources["retrain"].add("measured in this run")
        return (None, r["seconds"]) if r["cancelled"] else (r["model"], r["seconds"])
    if method == "wf":
        assert wf[0] is not None  # WF is scored only after its round gave a model (a cancelled round stops the run)
        start = time.perf_counter()
        baked = bake(wf[0], [c])
        return baked, wf[1] + time.perf_counter() - start
    forget_idx = torch.nonzero(train.targets == c).flatten().tolist()
    retain_idx = torch.nonzero(train.targets != c).flatten().tolist()
    r = run_baseline(method, base.backbone, Subset(train, retain_idx), Subset(train, forget_idx), n,
                     cfg=configs[method], seed=seed, should_stop=should_stop)
    return (None, r["seconds"]) if r["cancelled"] else (r["model"], r["seconds"])


def _aggregate(runs: dict[str, dict[int, list[dict]]], classes: list[int]) -> dict:
    methods: dict[str, dict] = {}
    per_class: dict[str, dict[str, dict]] = {str(c): {} for c in classes}
    for m, by_class in runs.items():
        every = [r["metrics"] for c in classes for r in by_class[c]]
        methods[m] = {k: _stats([r[k] for r in every]) for k in METRICS}
        for c in classes:
            rs = by_class[c]
            per_class[str(c)][m] = {
                "metrics": {k: _stats([r["metrics"][k] for r in rs]) for k in METRICS},
                "per_class_accuracy": torch.tensor([r["per_class_accuracy"] for r in rs]).nanmean(0).tolist(),
                "forget_predictions": torch.tensor([r["forget_predictions"] for r in rs]).mean(0).tolist(),
            }
    return {"methods": methods, "per_class": per_class}


def _stats(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    t = t[~t.isnan()]
    if len(t) == 0:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": t.mean().item(), "std": t.std(unbiased=False).item()}


def _nanmean(values: list[float]) -> float:
    return _stats(values)["mean"]


def _configs(manifest: Manifest, chosen: list[str], overrides: dict[str, dict]) -> dict:
    out = {"retrain": manifest.train_config, "wf": manifest.unlearn_config}
    out.update({m: {**default_config(m), **overrides.get(m, {})} for m in chosen if m not in out})
    return {m: out[m] for m in chosen}


# ---------------------------------------------------------------- helpers


def _check_replaces_less(directory: Path, classes: list[int], seeds: int) -> None:
    """Refuse to replace a benchmark.json that covers more than this run will."""
    path = directory / BENCHMARK_FILE
    try:
        old = json.loads(path.read_text())
        old_classes, old_seeds = set(old["forget_classes"]), int(old["seeds"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        raise FileExistsError(f"{path} exists and is not a readable benchmark") from None
    lost = sorted(old_classes - set(classes))
    if lost or old_seeds > seeds:
        raise FileExistsError(f"{path} covers {len(old_classes)} class(es) x {old_seeds} seed(s); this run "
                              f"({len(classes)} x {seeds}) would replace it with less"
                              + (f" (classes {lost} dropped)" if lost else "") + "; use --out for a partial run")


def _load_state(manifest: Manifest, path: str | os.PathLike) -> nn.Module:
    """A backbone from a user's safetensors state dict, validated like a checkpoint."""
    p = Path(path)
    state = read_tensors(p)
    try:
        net = manifest.build_network({k: tuple(v.shape) for k, v in state.items()})
    except BuildRefused as e:
        raise CheckpointError(f"{p} does not match backbone {manifest.backbone}: {e}") from None
    expected = net.state_dict()
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return net.eval()
