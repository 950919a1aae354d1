"""Orchestration shared by the CLI, the benchmark and the dashboard: a checkpoint's data, training it,
its unlearning round (Poppi et al., arXiv 2304.02049: every class's filter in one round), and its
Retrain oracle (the same recipe from scratch without the forget classes).

The data a checkpoint was made with (its validation split included) comes from
:mod:`wfexplain.splits`. Each training function loads data, calls a loop from
:mod:`wfexplain.engine`, evaluates, and writes the checkpoint atomically; a cancelled run writes
nothing. Progress and cancellation go through the same callbacks as the loops (tqdm in the CLI,
st.progress in the app). Under torchrun every rank runs the same function; only rank 0 writes
(:mod:`wfexplain.distributed`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from . import distributed as dist
from . import forget as forget_sets
from .atomic import check_space, dir_lock
from .backbones import create_backbone, get_spec, weight_shapes
from .checkpoint import MODEL_FILE, CheckpointError, check_target, inside, is_checkpoint, load, save_checkpoint
from .configs import TrainConfig, UnlearnConfig
from .data import fingerprint, load_dataset
from .engine import Progress, StopFlag, reset_memory, train_classifier, train_memory
from .evaluation import evaluate, predict
from .evaluation.metrics import accuracy, in_set
from .filtering import FilteredModel
from .history import FINAL, HISTORY_FILE, PHASE, Recorder, history_csv, merge, read_history
from .manifest import Manifest
from .splits import VAL_FRACTION, checkpoint_split, checkpoint_train_split, hold_out, recorded_split, training_subset

VAL_PROBE = 1_000  # validation images behind the figures `unlearn` reports while it runs


def _check_counts(num_classes: int, batch_size: int, limit_train: int | None, eval_limit: int | None = None) -> None:
    """Limits that leave a class without images (NaN metrics) or no full batch are refused up front."""
    if limit_train is not None and limit_train < max(batch_size, num_classes):
        raise ValueError(f"limit_train must be at least max(batch size {batch_size}, classes {num_classes}), "
                         f"got {limit_train}")
    if eval_limit is not None and eval_limit < num_classes:
        raise ValueError(f"eval_limit must be at least the number of classes ({num_classes}), got {eval_limit}")


def train_checkpoint(dataset: str, backbone: str, out: str | os.PathLike, cfg: TrainConfig = TrainConfig(),
                     data_dir: str | None = None, download: bool = False, img_size: int | None = None,
                     limit_train: int | None = None, half: bool = False, progress: Progress | None = None,
                     should_stop: StopFlag | None = None, overwrite: bool = False, device: str | torch.device = "cpu",
                     workers: int = 0, in_chans: int | None = None, val_fraction: float = VAL_FRACTION,
                     tensorboard: str | os.PathLike | None = None) -> dict:
    """Train the original classifier on ``device`` and write a checkpoint (all-ones memory) to ``out``.

    Every progress report is kept in ``history.csv`` beside the manifest (stage ``train``;
    :mod:`wfexplain.history`), and sent to TensorBoard under ``tensorboard`` when given.

    A seeded, class-stratified ``val_fraction`` of the training split is held out first (recorded in
    the manifest as ``validation``; 0 trains on everything): every later choice is made on it.

    Returns:
        ``{"cancelled", "accuracy", "seconds", "path"}``; nothing is written when cancelled.

    Raises:
        FileExistsError: ``out`` is a non-empty directory (or a file) and ``overwrite`` is False
            (checked, like writability, before any work; replacing drops everything the old one held).
    """
    target = Path(out)
    check_target(target, overwrite)
    train = load_dataset(dataset, "train", data_dir, download, img_size, in_chans)
    test = load_dataset(dataset, "test", data_dir, download, img_size, train.info.in_chans)
    info = train.info
    _check_counts(info.num_classes, cfg.batch_size, limit_train)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rest: Any = train
    val, validation = None, None
    if val_fraction > 0:
        images = round(val_fraction * len(train))
        if images < info.num_classes or len(train) - images < cfg.batch_size:
            raise ValueError(f"val_fraction={val_fraction} holds out {images} of {len(train)} training images: "
                             f"it needs at least one per class ({info.num_classes}) and one batch left to train on")
        rest, val, validation = hold_out(train, images, cfg.seed, seen_by_backbone=False)
    torch.manual_seed(cfg.seed)
    net = create_backbone(backbone, info.num_classes, info.in_chans, info.img_size).to(device)
    check_space(target, _nbytes(net, half))  # a full disk is found before the training, not after it
    fit = training_subset(rest, limit_train, cfg.seed)
    with Recorder("train", tensorboard if dist.is_main() else None) as history:
        result = train_classifier(net, fit, cfg, history.wrap(progress), should_stop, workers)
    if result["cancelled"]:
        return {"cancelled": True, "seconds": result["seconds"], "accuracy": None, "path": None}
    if progress:
        progress(result["steps"], result["steps"], {PHASE: FINAL})
    if half:  # evaluate exactly what will be loaded back
        net.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()})
    model = FilteredModel(backbone, info, net).to(device)
    acc = accuracy(predict(model, test, workers=workers), test.targets)
    metrics = {"original_accuracy": acc}
    if val is not None:
        metrics["validation_accuracy"] = accuracy(predict(model, val, workers=workers), val.targets)
    manifest = {
        "train_config": dataclasses.asdict(cfg), "seed": cfg.seed, "unlearn_config": None,
        "backbone_description": get_spec(backbone).description, "train_images": len(fit), "validation": validation,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "dataset_fingerprint": {"train": fingerprint(train), "test": fingerprint(test)},
        "metrics": metrics,
        "timings": {"train_seconds": round(result["seconds"], 1)},
    }
    if dist.any_rank(bool(should_stop and should_stop())):
        return {"cancelled": True, "seconds": result["seconds"], "accuracy": None, "path": None}
    if dist.is_main():
        save_checkpoint(model, target, manifest, half=half, overwrite=overwrite,
                        extra={HISTORY_FILE: history_csv(history.rows)})
    dist.barrier()
    return {"cancelled": False, "accuracy": acc, "seconds": result["seconds"], "path": target, "history": history.rows}


def unlearn_checkpoint(path: str | os.PathLike, cfg: UnlearnConfig = UnlearnConfig(), out: str | os.PathLike | None = None,
                       data_dir: str | None = None, download: bool = False, limit_train: int | None = None,
                       eval_limit: int | None = None, progress: Progress | None = None,
                       should_stop: StopFlag | None = None, device: str | torch.device = "cpu",
                       workers: int = 0, force: bool = False, tensorboard: str | os.PathLike | None = None) -> dict:
    """Train the memory matrices of all classes in one round (on ``device``) and save them.

    Args:
        path: checkpoint directory (its backbone stays frozen).
        cfg: the unlearning recipe.
        out: where to write the result (default: ``path`` itself; a different directory
            gets a full copy with the backbone).
        eval_limit: test images for the single-class evaluation stored in the manifest.
        force: replace trained memory matrices in place, or an existing ``out`` (its derived files
            go with it). In place, the backbone file and the Retrain oracles (which depend on the
            backbone only) are kept; benchmarks of the old memory are dropped.

    Raises:
        FileExistsError: without ``force``, ``out`` exists, or ``path`` already holds trained memory
            matrices (checked before any work, like writability).

    Returns:
        ``{"cancelled", "seconds", "single", "path", "memory_digest", "world_size"}``; nothing is
        written when cancelled. Under torchrun the memory digest is checked equal on every rank.
    """
    model = load(path, device)
    manifest = model.checkpoint_manifest()
    target = Path(out or path)
    in_place = target.resolve() == Path(path).resolve()
    if in_place and manifest.unlearned and not force:
        raise FileExistsError(f"{path} already holds trained memory matrices: replace them with --force "
                              "(force=True), or write the new round elsewhere with --out")
    check_target(target, overwrite=in_place or force)
    n = model.num_classes
    if cfg.max_set_size >= n:
        raise ValueError(f"max_set_size must be below the number of classes ({n}), got {cfg.max_set_size}")
    _check_counts(n, cfg.batch_size, limit_train, eval_limit)
    check_space(target, _nbytes(model.alphas) + (0 if in_place else _nbytes(model.backbone)))
    train = checkpoint_split(manifest, "train", data_dir, download)
    test = checkpoint_split(manifest, "test", data_dir, download)
    rest, val = recorded_split(manifest, train)
    validation = manifest.validation
    if val is None:  # made before validation splits (or imported): hold one out of the memory's training now
        rest, val, validation = hold_out(train, max(n, round(VAL_FRACTION * len(train))), cfg.seed, True)
    reset_memory(model)  # a fresh round starts from the original network
    with Recorder("unlearn", tensorboard if dist.is_main() else None) as history:
        watched = _with_validation(model, training_subset(val, VAL_PROBE, cfg.seed), cfg.steps, history.wrap(progress),
                                   workers)
        result = train_memory(model, training_subset(rest, limit_train, cfg.seed), cfg, watched, should_stop, workers)
    if result["cancelled"]:
        return {"cancelled": True, "seconds": result["seconds"], "single": None, "path": None}
    digest = dist.check_identical(model.memory, "memory matrices")
    if progress:
        progress(result["steps"], cfg.steps, {PHASE: FINAL})
    val_report = evaluate(model, val, workers=workers)
    report = evaluate(model, test, limit=eval_limit, workers=workers)
    if dist.any_rank(bool(should_stop and should_stop())):
        return {"cancelled": True, "seconds": result["seconds"], "single": None, "path": None}
    metrics = {k: v for k, v in manifest.metrics.items() if k != "evaluation"}  # stale after a new round
    fields = {
        **manifest.recorded(),
        "unlearn_config": dataclasses.asdict(cfg), "validation": validation,
        "metrics": {**metrics, "unlearn_eval": {"limit": eval_limit, **report["single"]},
                    "unlearn_val": {"images": len(val), **val_report["single"]}},
        "timings": {**manifest.timings, "unlearn_seconds": round(result["seconds"], 1)},
    }
    if dist.is_main():
        rows = merge(read_history(path), history.rows)  # the training stage kept, the unlearning stage replaced
        save_checkpoint(model, target, fields, half=manifest.storage_dtype == "float16", overwrite=in_place or force,
                        carry=[MODEL_FILE, ORACLE_DIR] if in_place else (), extra={HISTORY_FILE: history_csv(rows)},
                        expect=manifest.files if in_place else None)
    dist.barrier()
    return {"cancelled": False, "seconds": result["seconds"], "single": report["single"], "path": target,
            "history": history.rows,
            "validation": val_report["single"], "memory_digest": digest, "world_size": dist.world_size()}


def _nbytes(module: nn.Module, half: bool = False) -> int:
    """About the bytes ``module``'s tensors take in a checkpoint (what must be free before the work that writes them)."""
    return sum(t.numel() * (2 if half and t.is_floating_point() else t.element_size()) for t in module.state_dict().values())


def _with_validation(model: FilteredModel, probe, total: int, progress: Progress | None, workers: int) -> Progress:
    """``progress`` with the validation figures of every single-class filter (``val_forget``, ``val_retain``:
    means over classes on ``probe``) added, refreshed at 8 points of the run and at its end; each refresh is announced
    as a ``validation`` pause (:data:`~wfexplain.history.PHASE`) first."""
    every, last = max(1, total // 8), dict[str, float]()

    def report(step: int, steps: int, metrics: dict) -> None:
        nonlocal last
        if step % every == 0 or step == steps:
            if progress:
                progress(step, steps, {**metrics, **last, PHASE: "validation"})
            single = evaluate(model, probe, workers=workers)["single"]
            model.train()  # evaluate() switched to eval mode; the memory's training goes on
            last = {"val_forget": single["forget_accuracy_mean"], "val_retain": single["retain_accuracy_mean"]}
        if progress:
            progress(step, steps, {**metrics, **last})

    return report


# ---------------------------------------------------------------- the Retrain oracle


ORACLE_DIR = "retrain"  # oracles live in <checkpoint>/retrain/forget-<c>-seed<s>/


def oracle_path(checkpoint: str | os.PathLike, forget: Sequence[int], seed: int = 0) -> Path:
    """Where the oracle of ``forget`` and ``seed`` lives (``CheckpointError`` if a symlink leads it out of the checkpoint)."""
    return inside(checkpoint, f"{ORACLE_DIR}/forget-{forget_sets.key(forget)}-seed{seed}")


def retrain(checkpoint: str | os.PathLike, forget: Sequence[int], seed: int = 0, data_dir: str | None = None,
            progress: Progress | None = None, should_stop: StopFlag | None = None, save: bool = True,
            device: str | torch.device = "cpu", workers: int = 0, overwrite: bool = False, trust: bool = False) -> dict:
    """Train the Retrain oracle: the checkpoint's backbone and recipe, from scratch, without the ``forget`` classes.

    The recipe (``train_config`` in the manifest) is reused with ``seed``; the head keeps all N
    outputs. With ``save`` the oracle is written (atomically, rank 0) to :func:`oracle_path`
    as a checkpoint directory loadable with :func:`wfexplain.load`; its manifest's ``retrain_of``
    records the digest of the checkpoint's backbone file, so an oracle is only reused for the
    checkpoint it was trained for. An existing oracle is replaced only with ``overwrite``. ``trust``: the
    user allows a ``package.module:factory`` architecture to be imported (never implied by the checkpoint).

    Returns:
        ``{"model", "seconds", "path", "cancelled"}`` (``model`` a plain backbone, eval mode).
    """
    base = load(checkpoint, trust=trust)  # verified; its architecture is built only as the user allows
    manifest = base.checkpoint_manifest()
    info = manifest.dataset
    forget = forget_sets.classes(forget, info.num_classes, allow_empty=False)
    if manifest.train_config is None:
        raise ValueError(f"{checkpoint} records no train_config: it cannot be retrained")
    cfg = TrainConfig(**{**manifest.train_config, "seed": seed})
    path = oracle_path(checkpoint, forget, seed)
    if save and path.exists() and not overwrite:
        raise FileExistsError(f"the Retrain oracle {path} already exists")
    train = checkpoint_train_split(manifest, data_dir)
    keep = ~in_set(train.targets, forget)
    retain = Subset(train, torch.nonzero(keep).flatten().tolist())
    torch.manual_seed(seed)
    shapes = weight_shapes(base.backbone)
    del base  # only its verified shapes are needed from here on
    net = manifest.build_network(shapes, trust=trust).to(device)
    if save:
        check_space(path, _nbytes(net, manifest.storage_dtype == "float16"))
    with Recorder("train") as history:
        result = train_classifier(net, retain, cfg, history.wrap(progress), should_stop, workers)
    if result["cancelled"]:
        return {"model": None, "seconds": result["seconds"], "path": None, "cancelled": True}
    if save:
        if dist.is_main():
            fields = {"retrain_of": {"model_sha256": manifest.files[MODEL_FILE], "forget": forget, "seed": seed},
                      "train_config": dataclasses.asdict(cfg), "seed": seed, "train_images": len(retain),
                      "backbone_description": manifest.backbone_description,
                      "timings": {"train_seconds": round(result["seconds"], 3)}}
            with dir_lock(checkpoint):  # never lost to a swap of the checkpoint that holds it
                save_checkpoint(FilteredModel(manifest.backbone, info, net, heads=manifest.heads), path, fields,
                                half=manifest.storage_dtype == "float16", overwrite=overwrite,
                                extra={HISTORY_FILE: history_csv(history.rows)})
        dist.barrier()
    return {"model": net.eval(), "seconds": result["seconds"], "path": path if save else None, "cancelled": False}


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


def load_oracle(checkpoint, base: Manifest, forget: Sequence[int], seed: int) -> tuple[nn.Module | None, float, bool]:
    """(backbone, train seconds, stale) of the stored oracle; (None, nan, stale) when there is none to reuse."""
    path = oracle_path(checkpoint, forget, seed)
    if not is_checkpoint(path):
        return None, float("nan"), path.exists()
    try:
        oracle = load(path)
    except CheckpointError as e:
        warnings.warn(f"ignoring the Retrain oracle {path}: {e}", stacklevel=2)
        return None, float("nan"), True
    manifest = oracle.checkpoint_manifest()
    why = oracle_mismatch(manifest, base, forget, seed)
    if why:
        warnings.warn(f"ignoring the Retrain oracle {path}: {why}; training a new one", stacklevel=2)
        return None, float("nan"), True
    return oracle.backbone, float(manifest.timings.get("train_seconds", float("nan"))), False
