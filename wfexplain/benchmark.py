"""Compare weight filtering with the Retrain oracle and five baseline unlearning methods.

Every method turns the same original network into a plain network for one forget set:
Retrain trains from scratch without the forget classes, WF bakes the memory matrices
(:func:`wfexplain.filtering.bake`, no training per class), the baselines of
:mod:`wfexplain.baselines` fine-tune a copy. Each result is scored with the metrics of
:mod:`wfexplain.metrics` (DESIGN.md §2) and shown as its gap to Retrain.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from . import distributed as dist
from .atomic import atomic_write, write_json
from .backbones import build_network, head_module
from .baselines import default_config, run_baseline
from .checkpoint import (
    MODEL_FILE,
    CheckpointError,
    Manifest,
    check_match,
    is_checkpoint,
    load,
    package_versions,
    read_manifest,
    read_tensors,
    save_checkpoint,
)
from .data import stratified_subset
from .engine import Progress, StopFlag, TrainConfig, UnlearnConfig, train_classifier, train_memory
from .filtering import FilteredModel, bake
from .metrics import (
    forget_accuracy,
    in_set,
    mia_efficacy,
    per_class_accuracy,
    probe_accuracy,
    relearn_steps,
    retain_accuracy,
    true_class_confidence,
    zrf,
)
from .pipeline import checkpoint_split
from .runstore import RunStore


@dataclass(frozen=True)
class Metric:
    """A benchmark column: what it measures, its direction and its formula."""

    label: str
    higher_is_better: bool
    formula: str
    reference: str

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, Metric] = {
    "forget_accuracy_test": Metric(
        "Forget acc. (test)", False, "accuracy on test images of the forgotten class", "DESIGN.md §2; Retrain ~0"),
    "retain_accuracy_test": Metric(
        "Retain acc. (test)", True, "accuracy on test images of the other classes", "DESIGN.md §2"),
    "forget_accuracy_train": Metric(
        "Forget acc. (train)", False, "accuracy on training images of the forgotten class", "DESIGN.md §2"),
    "retain_accuracy_train": Metric(
        "Retain acc. (train)", True, "accuracy on training images of the other classes", "DESIGN.md §2"),
    "mia_efficacy": Metric(
        "MIA-efficacy", True,
        "fraction of forget-train images an SVC on true-class confidence (fit: retain-train = member, "
        "test = non-member) calls non-member", "Jia et al. 2023 (Model Sparsity); Fan et al. 2024 (SalUn)"),
    "zrf": Metric(
        "ZRF", True, "1 - mean_i JS(p_model(x_i) || p_random(x_i)) over forget images, JS with m = (p+q)/2, natural log",
        "Chundawat et al. 2023"),
    "relearn_steps": Metric(
        "Relearn steps", True, "fine-tuning steps on a few forget images until forget accuracy is back to 50%",
        "Golatkar et al. 2020; DESIGN.md §2"),
    "probe_accuracy": Metric(
        "Probe acc.", False,
        "accuracy on the forgotten class's test images of a linear probe fit on penultimate features",
        "residual knowledge; DESIGN.md §2"),
    "seconds": Metric("Time (s)", False, "wall-clock time of the unlearning itself", "measured"),
}

METHODS: tuple[str, ...] = ("retrain", "wf", "finetune", "neggrad_plus", "random_labels", "salun", "ssd")

ORACLE_DIR = "retrain"  # oracles live in <checkpoint>/retrain/forget-<c>-seed<s>/


# ---------------------------------------------------------------- the Retrain oracle


def oracle_path(checkpoint: str | os.PathLike, forget: Sequence[int], seed: int = 0) -> Path:
    return Path(checkpoint) / ORACLE_DIR / f"forget-{'-'.join(map(str, sorted(forget)))}-seed{seed}"


def retrain(checkpoint: str | os.PathLike, forget: Sequence[int], seed: int = 0, data_dir: str | None = None,
            progress: Progress | None = None, should_stop: StopFlag | None = None, save: bool = True,
            device: str | torch.device = "cpu", workers: int = 0, overwrite: bool = False) -> dict:
    """Train the Retrain oracle: the checkpoint's backbone and recipe, from scratch, without the ``forget`` classes.

    The recipe (``train_config`` in the manifest) is reused with ``seed``; the head keeps all N
    outputs. With ``save`` the oracle is written (atomically, rank 0) to :func:`oracle_path`
    as a checkpoint directory loadable with :func:`wfexplain.load`; its manifest's ``retrain_of``
    records the digest of the checkpoint's backbone file, so an oracle is only reused for the
    checkpoint it was trained for. An existing oracle is replaced only with ``overwrite``.

    Returns:
        ``{"model", "seconds", "path", "cancelled"}`` (``model`` a plain backbone, eval mode).
    """
    manifest = read_manifest(checkpoint)
    info = manifest.dataset
    forget = _check_classes(forget, info.num_classes)
    if manifest.train_config is None:
        raise ValueError(f"{checkpoint} records no train_config: it cannot be retrained")
    cfg = TrainConfig(**{**manifest.train_config, "seed": seed})
    path = oracle_path(checkpoint, forget, seed)
    if save and path.exists() and not overwrite:
        raise FileExistsError(f"the Retrain oracle {path} already exists")
    train = _train_split(manifest, data_dir)
    keep = ~in_set(train.targets, forget)
    retain = Subset(train, torch.nonzero(keep).flatten().tolist())
    torch.manual_seed(seed)
    net = build_network(manifest.backbone, info.num_classes, info.in_chans, info.img_size, manifest.arch_kwargs,
                        trust=True).to(device)  # the checkpoint loaded: its architecture is trusted
    result = train_classifier(net, retain, cfg, progress, should_stop, workers)
    if result["cancelled"]:
        return {"model": None, "seconds": result["seconds"], "path": None, "cancelled": True}
    if save:
        if dist.is_main():
            save_checkpoint(FilteredModel(manifest.backbone, info, net), path, {
                "retrain_of": {"model_sha256": manifest.files[MODEL_FILE], "forget": forget, "seed": seed},
                "train_config": dataclasses.asdict(cfg), "seed": seed, "train_images": len(retain),
                "backbone_description": manifest.backbone_description,
                "timings": {"train_seconds": round(result["seconds"], 3)},
            }, half=manifest.storage_dtype == "float16", overwrite=overwrite)
        dist.barrier()
    else:
        path = None
    return {"model": net.eval(), "seconds": result["seconds"], "path": path, "cancelled": False}


def oracle_mismatch(oracle: Manifest, base: Manifest, forget: Sequence[int], seed: int) -> str | None:
    """Why a stored oracle does not belong to ``base`` (None: it does)."""
    of = oracle.retrain_of
    if of is None:
        return "it records no retrain_of"
    if of["model_sha256"] != base.files[MODEL_FILE]:
        return "it was trained for another checkpoint (backbone digest differs)"
    if sorted(of["forget"]) != sorted(forget) or of["seed"] != seed:
        return f"it left out {of['forget']} with seed {of['seed']}"
    if oracle.dataset.class_names != base.dataset.class_names or oracle.backbone != base.backbone:
        return "its dataset or backbone differs"
    if {**(oracle.train_config or {}), "seed": 0} != {**(base.train_config or {}), "seed": 0}:
        return "its training recipe differs"
    return None


def _load_oracle(checkpoint, base: Manifest, forget: Sequence[int], seed: int) -> tuple[nn.Module | None, float, bool]:
    """(backbone, train seconds, stale) of the stored oracle; (None, nan, stale) when there is none to reuse."""
    path = oracle_path(checkpoint, forget, seed)
    if not is_checkpoint(path):
        return None, float("nan"), path.exists()
    try:
        oracle = load(path)
    except CheckpointError as e:
        warnings.warn(f"ignoring the Retrain oracle {path}: {e}", stacklevel=2)
        return None, float("nan"), True
    assert oracle.manifest is not None
    why = oracle_mismatch(oracle.manifest, base, forget, seed)
    if why:
        warnings.warn(f"ignoring the Retrain oracle {path}: {why}; training a new one", stacklevel=2)
        return None, float("nan"), True
    return oracle.backbone, float(oracle.manifest.timings.get("train_seconds", float("nan"))), False


# ---------------------------------------------------------------- scoring one network


@dataclass(frozen=True)
class Probe:
    """Everything a network is scored on for one forget class (tensors on the CPU)."""

    x_test: torch.Tensor
    y_test: torch.Tensor
    x_train: torch.Tensor  # seeded class-stratified subset of the training split
    y_train: torch.Tensor


@torch.no_grad()
def _outputs(net: nn.Module, x: torch.Tensor, head: nn.Module | None = None, batch: int = 500):
    """Softmax probabilities (and penultimate features when ``head`` is given), on the CPU."""
    device = next(net.parameters()).device
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, inp: feats.append(inp[0].detach().cpu())) if head else None
    try:
        probs = torch.cat([net(xb.to(device)).softmax(1).cpu() for xb in x.split(batch)])
    finally:
        if hook:
            hook.remove()
    return probs, (torch.cat(feats) if head else None)


def score(net: nn.Module, heads: list[str], data: Probe, forget: Sequence[int], num_classes: int,
          p_random: torch.Tensor, seed: int = 0) -> dict:
    """Every metric of :data:`METRICS` (but ``seconds``) for one network and forget set, plus the per-class views.

    ``p_random``: softmax of a randomly initialised network on the forget images of ``data.x_train`` (for ZRF).
    """
    net.eval()
    head = head_module(net, heads)
    p_test, f_test = _outputs(net, data.x_test, head)
    p_train, f_train = _outputs(net, data.x_train, head)
    pred_test, pred_train = p_test.argmax(1), p_train.argmax(1)
    fm_test, fm_train = in_set(data.y_test, forget), in_set(data.y_train, forget)
    g = torch.Generator().manual_seed(seed)
    few = torch.nonzero(fm_train).flatten()
    few = few[torch.randperm(len(few), generator=g)[:32]]
    first = forget[0]
    return {
        "metrics": {
            "forget_accuracy_test": forget_accuracy(pred_test, data.y_test, forget),
            "retain_accuracy_test": retain_accuracy(pred_test, data.y_test, forget),
            "forget_accuracy_train": forget_accuracy(pred_train, data.y_train, forget),
            "retain_accuracy_train": retain_accuracy(pred_train, data.y_train, forget),
            "mia_efficacy": mia_efficacy(true_class_confidence(p_train[~fm_train], data.y_train[~fm_train]),
                                         true_class_confidence(p_test, data.y_test),
                                         true_class_confidence(p_train[fm_train], data.y_train[fm_train]), seed=seed),
            "zrf": zrf(p_train[fm_train], p_random),
            "relearn_steps": float(relearn_steps(net, data.x_train[few], data.y_train[few], data.x_test[fm_test],
                                                 data.y_test[fm_test], seed=seed)),
            "probe_accuracy": probe_accuracy(f_train, data.y_train, f_test, data.y_test, forget, seed=seed),
        },
        "per_class_accuracy": per_class_accuracy(pred_test, data.y_test, num_classes),
        "forget_predictions": torch.bincount(pred_test[data.y_test == first], minlength=num_classes).div(
            max(int((data.y_test == first).sum()), 1)).tolist(),
    }


# ---------------------------------------------------------------- the benchmark


def run_benchmark(checkpoint: str | os.PathLike, forget_classes: Sequence[int] | None = None, seeds: int = 3,
                  methods: Sequence[str] | None = None, limit: int | None = None, train_limit: int = 10_000,
                  wf_round: str = "run", extra: dict[str, str | os.PathLike] | None = None,
                  data_dir: str | None = None, progress: Progress | None = None, should_stop: StopFlag | None = None,
                  out: str | os.PathLike | None = "auto", save_oracles: bool = True, command: str = "",
                  overrides: dict[str, dict] | None = None, resume: bool = True, force: bool = False) -> dict | None:
    """Run every method on every forget class (one at a time) and seed; aggregate mean and std.

    Args:
        checkpoint: an unlearned wfexplain checkpoint directory.
        forget_classes: classes forgotten one at a time (default: all).
        seeds: seeds 0..seeds-1; every method (Retrain and the WF round included) reruns per seed.
        methods: subset of :data:`METHODS` (default: all; Retrain is always run, it is the reference).
        limit: test images (seeded, class-stratified; default: the whole test split).
        train_limit: training images the train-split metrics, the MIA and the probe use.
        wf_round: ``"run"`` reruns WF's unlearning round (all classes at once) per seed and times
            it; ``"checkpoint"`` uses the checkpoint's memory and the round time in its manifest.
        extra: bring your own: method name -> safetensors state dict of the same backbone that
            forgot the (single) forget class elsewhere; scored like the others, no time.
        out: directory for ``benchmark.json``/``.md``/``.tex`` (``"auto"``: the checkpoint; None: write nothing).
        save_oracles: store Retrain oracles trained here under ``<checkpoint>/retrain/`` (reused next time).
        overrides: baseline name -> hyperparameters that replace its defaults (stored in ``config``).
        resume: keep every scored result (and WF round) in the checkpoint's run store
            (:mod:`wfexplain.runstore`) and reuse stored ones; False computes everything and stores nothing.
        force: replace an existing ``benchmark.json`` that covers classes or seeds this run does not
            (without it that is a ``FileExistsError``, raised before any work).

    Returns:
        The ``benchmark.json`` dict (README, "Evaluation suite"), or None when cancelled.
    """
    base = load(checkpoint)
    manifest, info, n = base.manifest, base.info, base.num_classes
    classes = _check_classes(forget_classes if forget_classes is not None else range(n), n)
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

    train = _train_split(manifest, data_dir)
    test = checkpoint_split(manifest, "test", data_dir)
    data = Probe(*_tensors(test, limit), *_tensors(train, train_limit))
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
    store = RunStore(checkpoint, limit, train_limit) if resume else None
    runs: dict[str, dict[int, list[dict]]] = {m: {c: [] for c in classes} for m in ["original", *chosen, *byo]}
    times: dict[str, list[float]] = {m: [] for m in runs}
    wf_seconds: list[float] = []
    sources: dict[str, set[str]] = {"retrain": set(), "wf": set()}
    for seed in range(seeds):
        torch.manual_seed(10_000 + seed)
        random_net = build_network(manifest.backbone, n, info.in_chans, info.img_size, manifest.arch_kwargs,
                                   trust=True).eval()
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
        "checkpoint": str(checkpoint), "dataset": info.name, "backbone": manifest.backbone,
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
    if wf_round == "checkpoint":
        return base, float(base.manifest.timings.get("unlearn_seconds", float("nan"))), \
            "checkpoint manifest (unlearn_seconds)"
    model = load(checkpoint)
    stored = store.get_round(seed, config) if store else None
    if stored is not None:
        memory, seconds = stored
        with torch.no_grad():
            for k, p in model.memory.items():
                p.copy_(memory[k])
        return model.eval(), seconds, "stored round of an earlier run (timed then)"
    with torch.no_grad():
        for p in model.alphas.values():
            p.fill_(1.0)
    cfg = UnlearnConfig(**{**base.manifest.unlearn_config, "seed": seed})
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
        net, secs, stale = _load_oracle(checkpoint, base.manifest, [c], seed)
        if net is not None:
            sources["retrain"].add("stored oracle (its manifest's train_seconds)")
            return net, secs
        r = retrain(checkpoint, [c], seed, data_dir, should_stop=should_stop, save=save_oracles, overwrite=stale)
        sources["retrain"].add("measured in this run")
        return (None, r["seconds"]) if r["cancelled"] else (r["model"], r["seconds"])
    if method == "wf":
        start = time.perf_counter()
        baked = bake(wf[0], [c])
        return baked, wf[1] + time.perf_counter() - start
    forget_idx = torch.nonzero(train.targets == c).flatten().tolist()
    retain_idx = torch.nonzero(train.targets != c).flatten().tolist()
    r = run_baseline(method, base.backbone, Subset(train, retain_idx), Subset(train, forget_idx), n,
                     cfg=configs[method], seed=seed, should_stop=should_stop)
    return (None, r["seconds"]) if r["cancelled"] else (r["model"], r["seconds"])


def _aggregate(runs: dict[str, dict[int, list[dict]]], classes: list[int]) -> dict:
    methods, per_class = {}, {str(c): {} for c in classes}
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


# ---------------------------------------------------------------- tables


def benchmark_table(bench: dict, fmt: str = "md") -> str:
    """Methods x metrics (mean ± std, gap to Retrain in brackets) as Markdown or LaTeX (booktabs)."""
    methods = bench["methods"]
    ref = methods.get("retrain", {})
    cols = list(METRICS)
    pct = {k for k in cols if "accuracy" in k or k in ("mia_efficacy",)}

    def cell(m: str, k: str) -> str:
        v = methods[m].get(k, {"mean": float("nan"), "std": float("nan")})
        mean, std = v["mean"], v["std"]
        if math.isnan(mean):
            return "–"
        scale = 100.0 if k in pct else 1.0
        text = f"{mean * scale:.1f} ± {std * scale:.1f}" if k in pct else f"{mean:.3g} ± {std:.2g}"
        if m not in ("retrain", "original") and k in ref and not math.isnan(ref[k]["mean"]):
            text += f" ({(mean - ref[k]['mean']) * scale:+.1f})" if k in pct else f" ({mean - ref[k]['mean']:+.3g})"
        return text

    head = [f"{METRICS[k].label}{' (%)' if k in pct else ''} {METRICS[k].arrow}" for k in cols]
    rows = [[m, *(cell(m, k) for k in cols)] for m in methods]
    if fmt == "md":
        lines = ["| method | " + " | ".join(head) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    def esc(s: str) -> str:
        for a, b in (("%", r"\%"), ("_", r"\_"), ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$")):
            s = s.replace(a, b)
        return s

    lines = [r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", " & ".join(["method", *map(esc, head)]) + r" \\",
             r"\midrule", *(" & ".join(map(esc, r)) + r" \\" for r in rows), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_benchmark(bench: dict, directory: Path) -> list[Path]:
    """Write ``benchmark.json``, ``benchmark.md`` and ``benchmark.tex`` atomically (rank 0 only)."""
    paths = [directory / "benchmark.json", directory / "benchmark.md", directory / "benchmark.tex"]
    if dist.is_main():
        write_json(paths[0], bench)
        cost = bench["cost"]
        md = (benchmark_table(bench, "md") + f"\nWF, all {len(bench['class_names'])} classes: "
              f"{cost['wf_all_classes_seconds']:.0f} s; Retrain, one class: {cost['retrain_one_class_seconds']:.0f} s; "
              f"ratio {cost['ratio']:.2f}.\n")
        atomic_write(paths[1], lambda tmp: Path(tmp).write_text(md))
        atomic_write(paths[2], lambda tmp: Path(tmp).write_text(benchmark_table(bench, "tex")))
    return paths


# ---------------------------------------------------------------- helpers


def _check_replaces_less(directory: Path, classes: list[int], seeds: int) -> None:
    """Refuse to replace a benchmark.json that covers more than this run will."""
    path = directory / "benchmark.json"
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


def _check_classes(classes, n: int) -> list[int]:
    out = sorted({int(c) for c in classes})
    bad = [c for c in out if not 0 <= c < n]
    if bad or not out:
        raise ValueError(f"forget class {bad[0] if bad else '(none)'} invalid: valid classes are 0..{n - 1}")
    return out


def _train_split(manifest: Manifest, data_dir: str | None):
    """The training split the checkpoint was trained on (its --limit-train subset included)."""
    train = checkpoint_split(manifest, "train", data_dir)
    used = manifest.train_images or len(train)
    if used < len(train):
        idx = stratified_subset(train.targets, used, (manifest.train_config or {}).get("seed", 0))
        sub = Subset(train, idx.tolist())
        sub.targets = train.targets[idx]
        return sub
    return train


def _tensors(ds, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    idx = stratified_subset(ds.targets, limit, seed=0)
    x, _ = next(iter(DataLoader(Subset(ds, idx.tolist()), batch_size=len(idx))))
    return x, ds.targets[idx]


def _load_state(manifest: Manifest, path: str | os.PathLike) -> nn.Module:
    """A backbone from a user's safetensors state dict, validated like a checkpoint."""
    info = manifest.dataset
    net = build_network(manifest.backbone, info.num_classes, info.in_chans, info.img_size, manifest.arch_kwargs,
                        trust=True)
    p = Path(path)
    state = read_tensors(p)
    expected = net.state_dict()
    check_match(p, {k: v.shape for k, v in expected.items()}, state, "weights", f"backbone {manifest.backbone}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return net.eval()
