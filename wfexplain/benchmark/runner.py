"""Compare weight filtering with the Retrain oracle and the baselines, on single classes and combinations.

Every method of the registry (:mod:`wfexplain.methods`) turns the same original network into a plain network
for one forget set (:class:`~wfexplain.benchmark.unlearning.Unlearner`). First each method is tuned on the
validation split with the same budget (:mod:`~wfexplain.benchmark.tuning`); then the test images are loaded and
every (seed, forget set, method) is scored with the metrics of the catalogue (docs/benchmark.md), kept in the run
store as it finishes, aggregated, and shown as its gap to Retrain.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from .. import forget as forget_sets
from ..backbones import BuildRefused, weight_shapes
from ..checkpoint import CheckpointError, Manifest, load, package_versions, read_tensors
from ..data import subset_tensors
from ..engine import Progress, StopFlag
from ..methods import get_method
from ..splits import checkpoint_split, checkpoint_train_split, checkpoint_validation_split
from .aggregate import add_attack, aggregate, cost_at_parity, requests, stats
from .catalogue import BENCHMARK_FILE, benchmark_sets, method_keys
from .reports import write_benchmark
from .scoring import Probe, _outputs, score
from .store import RunStore
from .tuning import TUNED_ROLES, Validation, base_configs, full_config, tune
from .unlearning import Unlearner

# ---------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark runs and where its results go.

    Attributes:
        forget_classes: classes forgotten one at a time (default: all).
        pairs, triples: seeded pairs and triples of classes also forgotten (:func:`benchmark_sets`).
        seeds: seeds 0..seeds-1; every method (Retrain and the WF round included) reruns per seed.
        combination_seeds: seeds for the pairs and triples (default: ``seeds``; each needs its own Retrain oracles).
        methods: registered methods to run (default: all; Retrain is always run, it is the reference).
        tune: choose every method's hyperparameters on the validation split first (same grid budget per method,
            :mod:`~wfexplain.benchmark.tuning`); False: defaults (and ``overrides``) as they are.
        tune_only: stop after the tuning (its points stay in the run store) and return ``{"tuning": ...}``; nothing is
            written and the test split is never read (a long run split by methods tunes first, then scores).
        limit: test images (seeded, class-stratified; default: the whole test split).
        train_limit: training images the train-split metrics, the MIA, the attack and the probe use.
        val_limit: validation images the tuning scores on (default: all).
        wf_round: ``"run"`` reruns WF's round (all classes at once) per seed and configuration and times it;
            ``"checkpoint"`` uses the checkpoint's memory and recorded time for the checkpoint's own configuration.
        extra: bring your own: method name -> safetensors state dict of the same backbone that forgot the
            (single) forget class elsewhere; scored like the others, no time.
        data_dir: the dataset's directory (default: the one the checkpoint recorded).
        device: where every network is trained and scored (``cpu``, ``cuda``, ``cuda:N``); results are stored alike.
        out: directory for ``benchmark.json``/``.md``/``.tex``/``.csv`` (``"auto"``: the checkpoint; None: nothing).
        save_oracles: store Retrain oracles trained here under ``<checkpoint>/retrain/`` (reused next time).
        overrides: method -> fixed hyperparameters replacing its defaults (tuning varies its grid's fields on top).
        grids: method -> tuning grid replacing the registered one (every method the same number of points).
        resume: keep every scored result, tuning point and WF round in the checkpoint's run store and reuse them.
        force: replace an existing ``benchmark.json`` that covers sets or seeds this run does not.
        command: the command line, recorded in ``benchmark.json``.
        explanations: also measure WF's deletion curves on the forget sets (``explanations`` in ``benchmark.json``).
    """

    forget_classes: tuple[int, ...] | None = None
    pairs: int = 0
    triples: int = 0
    seeds: int = 3
    combination_seeds: int | None = None
    methods: tuple[str, ...] | None = None
    tune: bool = True
    tune_only: bool = False
    limit: int | None = None
    train_limit: int = 10_000
    val_limit: int | None = None
    wf_round: str = "run"
    extra: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    device: str = "cpu"
    out: str | None = "auto"
    save_oracles: bool = True
    overrides: dict[str, dict] = field(default_factory=dict)
    grids: dict[str, dict] = field(default_factory=dict)
    resume: bool = True
    force: bool = False
    command: str = ""
    explanations: bool = True


def run_benchmark(checkpoint: str | os.PathLike, config: BenchmarkConfig = BenchmarkConfig(),
                  progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict | None:
    """Tune on validation, then score every method on every forget set and seed; aggregate mean and std.

    Returns:
        The ``benchmark.json`` dict (docs/formats.md), or None when cancelled.
    """
    c = config
    base = load(checkpoint).to(c.device)
    manifest, info, n = base.checkpoint_manifest(), base.info, base.num_classes
    classes = forget_sets.classes(c.forget_classes if c.forget_classes is not None else range(n), n, allow_empty=False)
    sets = benchmark_sets(n, classes, c.pairs, c.triples)
    for name, v in (("seeds", c.seeds), ("combination_seeds", c.combination_seeds)):
        if (v is not None or name == "seeds") and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be an integer ≥ 1, got {v!r}")
    set_seeds = {forget_sets.key(s): c.seeds if len(s) == 1 or c.combination_seeds is None else
                 min(c.combination_seeds, c.seeds) for s in sets}
    if c.wf_round not in ("run", "checkpoint"):
        raise ValueError(f"wf_round must be 'run' or 'checkpoint', got {c.wf_round!r}")
    if c.out is not None and not c.force:
        _check_replaces_less(Path(checkpoint) if c.out == "auto" else Path(c.out), sets, c.seeds)
    chosen = _chosen_methods(c, manifest, checkpoint)
    byo = {name: _load_state(manifest, path) for name, path in (c.extra or {}).items()}
    if byo and len(sets) != 1:
        raise ValueError("a network brought from elsewhere forgot one class: pass exactly one forget class with it")

    train = checkpoint_train_split(manifest, c.data_dir)
    tuning, val_note = None, None
    if c.tune:
        val, val_note = _validation(manifest, c)
        tune_store = RunStore(checkpoint, manifest, train, RunStore.validation_inputs(val.x, val.y)) \
            if c.resume else None
        unlearner = Unlearner(checkpoint, base, train, tune_store, c.wf_round, c.data_dir, c.save_oracles, should_stop,
                              c.device)
        tuning = tune(unlearner, chosen, sets, val, base_configs(chosen, manifest.unlearn_config, c.overrides),
                      c.grids, tune_store, progress, should_stop)
        if tuning is None:
            return None
    if c.tune_only:
        return {"tuning": tuning}
    # the test split is read only now, after every choice was made on validation
    test = checkpoint_split(manifest, "test", c.data_dir)
    data = Probe(*subset_tensors(test, c.limit)[:2], *subset_tensors(train, c.train_limit)[:2])
    store = RunStore(checkpoint, manifest, train, RunStore.probe_inputs(c.limit, c.train_limit, data)) \
        if c.resume else None
    unlearner = Unlearner(checkpoint, base, train, store, c.wf_round, c.data_dir, c.save_oracles, should_stop, c.device)
    base_cfg = base_configs(chosen, manifest.unlearn_config, c.overrides)
    configs = {m: {forget_sets.key(s): _config(m, s, manifest, tuning, base_cfg) for s in sets} for m in chosen}
    runs = ["original", *chosen, *byo]
    total, done = sum(set_seeds.values()) * (len(runs) - 1), 0
    results: dict[str, dict[str, list[dict]]] = {m: {forget_sets.key(s): [] for s in sets} for m in runs}
    for seed in range(c.seeds):
        torch.manual_seed(10_000 + seed)
        random_net = manifest.build_network(weight_shapes(base.backbone)).to(c.device).eval()
        for s in sets:
            k, p_random = forget_sets.key(s), None
            if seed >= set_seeds[k]:
                continue
            for m in runs:
                if should_stop and should_stop():
                    return None
                cfg = configs.get(m, {}).get(k)
                result = store.get(seed, s, m, cfg) if store and m not in byo else None
                if result is None:
                    net, secs = (byo[m], float("nan")) if m in byo else unlearner.make(m, s, seed, cfg)
                    if net is None:
                        return None
                    if p_random is None:  # the random network's output on this set, once
                        p_random, _ = _outputs(random_net, data.x_train[torch.isin(data.y_train, torch.tensor(s))])
                    result = score(net, base.heads, data, list(s), n, p_random, seed)
                    result["metrics"]["seconds"] = secs
                    if store and m not in byo:
                        store.put(seed, s, m, cfg, result)
                results[m][k].append(result)
                if m != "original":
                    done += 1
                    if progress:
                        progress(done, total, {"method": m, "forget": list(s), "seed": seed})
    add_attack(results)
    summary = aggregate(results, sets, forget_sets.key)
    wf_cfg = configs["wf"][forget_sets.key(sets[0])] if "wf" in chosen else None  # one round serves every set
    round_seconds = stats([unlearner.round_seconds(seed, wf_cfg) for seed in range(c.seeds)])["mean"] \
        if wf_cfg is not None else float("nan")
    bench = {
        "checkpoint": str(checkpoint), "weights": dict(manifest.files),  # file -> SHA-256: what was benchmarked
        "dataset": info.name, "backbone": manifest.backbone,
        "class_names": list(info.class_names), "forget_classes": classes,
        "forget_sets": [list(s) for s in sets], "seeds": c.seeds,
        "num_test_images": len(data.y_test), "num_train_images_scored": len(data.y_train),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "command": c.command,
        **summary,
        "cost": {
            "wf_round_seconds": round_seconds,
            "one_request_seconds": {m: summary["methods"].get(m, {}).get("seconds", {}).get("mean") for m in chosen},
            "parity": cost_at_parity(summary["by_size"], round_seconds, requests(n)),
            "tuning_seconds": tuning["seconds"] if tuning else {},
            "wf_seconds_source": " + ".join(sorted(unlearner.sources["wf"])),
            "retrain_seconds_source": " + ".join(sorted(unlearner.sources["retrain"])),
        },
        "selection": {"tuned": c.tune, "validation": val_note, "test_read_after_choosing": True},
        "tuning": tuning,
        "config": {m: configs[m] for m in chosen},
        "versions": package_versions(),
    }
    if c.explanations and wf_cfg is not None:
        bench["explanations"] = _explanations(unlearner, wf_cfg, data, sets)
    if c.out is not None:
        write_benchmark(bench, Path(checkpoint) if c.out == "auto" else Path(c.out))
    return bench


def _explanations(unlearner: Unlearner, wf_cfg: dict, data: Probe, sets: list[tuple[int, ...]]) -> dict | None:
    """Do WF's memories explain? The deletion curves of :mod:`wfexplain.explain.deletion` for the benchmark's forget
    sets, on its own test images, rankings from its training images, for seed 0's round (compact, as ``--record``)."""
    from ..explain.deletion import measure
    from ..explain.deletion_report import compact

    model, _ = unlearner.wf_model(0, wf_cfg)
    if model is None:
        return None
    report = measure(model, data.x_test, data.y_test, data.x_train, data.y_train,
                     classes=[s[0] for s in sets if len(s) == 1], sets=[list(s) for s in sets if len(s) > 1])
    return compact(report)


def _chosen_methods(c: BenchmarkConfig, manifest: Manifest, checkpoint) -> list[str]:
    known = method_keys()
    asked = list(c.methods or [m for m in known if m != "original"])
    unknown = [m for m in asked if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    chosen = ["retrain", *[m for m in dict.fromkeys(asked) if m not in ("retrain", "original")]]
    if any(m in chosen for m in ("wf", "wf_removed")) and not manifest.unlearned:
        raise ValueError(f"{checkpoint} has no memory matrices yet: run `wfexplain unlearn --checkpoint {checkpoint}` first")
    if "wf_removed" in chosen and "wf" not in chosen:
        chosen.insert(1, "wf")  # wf_removed starts from WF's round
    return chosen


def _validation(manifest: Manifest, c: BenchmarkConfig) -> tuple[Validation, dict]:
    """The validation tensors the tuning scores on, and what they are (refused when the checkpoint has none)."""
    recorded = manifest.validation
    if not recorded:
        raise ValueError("tuning needs a validation split, and this checkpoint records none: re-make it with "
                         "`wfexplain train --val-fraction 0.1`, or benchmark untuned (--no-tune)")
    x, y, _ = subset_tensors(checkpoint_validation_split(manifest, c.data_dir), c.val_limit)
    return Validation(x, y), {**recorded, "images_scored": len(y)}


def _config(method: str, s: tuple[int, ...], manifest: Manifest, tuning: dict | None, base: dict) -> dict | None:
    """The full configuration ``method`` runs with on set ``s``: its base (:func:`base_configs`) with the tuned point."""
    if get_method(method).role not in TUNED_ROLES:
        return manifest.train_config if method == "retrain" else None
    if tuning is None:
        return full_config(method, {}, base)
    k = forget_sets.key(s)
    chosen_wf = full_config("wf", tuning["chosen"]["wf"][k], base) if method == "wf_removed" else None
    return full_config(method, tuning["chosen"][method][k], base, chosen_wf)


# ---------------------------------------------------------------- helpers


def _check_replaces_less(directory: Path, sets: list[tuple[int, ...]], seeds: int) -> None:
    """Refuse to replace a benchmark.json that covers more forget sets or seeds than this run will."""
    path = directory / BENCHMARK_FILE
    try:
        old = json.loads(path.read_text())
        old_sets = {forget_sets.key(s) for s in old.get("forget_sets") or [[c] for c in old["forget_classes"]]}
        old_seeds = int(old["seeds"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        raise FileExistsError(f"{path} exists and is not a readable benchmark") from None
    lost = sorted(old_sets - {forget_sets.key(s) for s in sets})
    if lost or old_seeds > seeds:
        raise FileExistsError(f"{path} covers {len(old_sets)} forget set(s) x {old_seeds} seed(s); this run "
                              f"({len(sets)} x {seeds}) would replace it with less"
                              + (f" (sets {', '.join(lost)} dropped)" if lost else "") + "; use --out for a partial run")


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
