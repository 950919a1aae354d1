"""Orchestration shared by the CLI and the dashboard: train a checkpoint, run the unlearning round.

Each function loads data, calls a loop from :mod:`wfexplain.engine`, evaluates, and writes
the checkpoint atomically; a cancelled run writes nothing. Progress and cancellation go
through the same callbacks as the loops (tqdm in the CLI, st.progress in the app). Under torchrun
every rank runs the same function; only rank 0 writes (:mod:`wfexplain.distributed`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch.utils.data import Subset

from . import distributed as dist
from .backbones import create_backbone, get_spec
from .checkpoint import MODEL_FILE, check_target, load, save_checkpoint
from .data import fingerprint, load_dataset, stratified_subset, with_preprocessing
from .engine import Progress, StopFlag, TrainConfig, UnlearnConfig, train_classifier, train_memory
from .evaluation import evaluate, predict
from .filtering import FilteredModel
from .manifest import Manifest
from .metrics import accuracy


def checkpoint_split(manifest: Manifest, split: str, data_dir: str | os.PathLike | None = None,
                     download: bool = False):
    """A split of the checkpoint's dataset, preprocessed as its network expects.

    The directory is ``data_dir`` if given, else the one the checkpoint recorded, else the
    dataset's default; size, channels, mean and std are the checkpoint's own, whatever the
    dataset's defaults.
    """
    info = manifest.dataset
    root = data_dir or manifest.data_dir
    chans = info.in_chans if info.name == "imagefolder" else None
    return with_preprocessing(load_dataset(info.name, split, root, download, info.img_size, chans), info)


def _limit(ds, n: int | None, seed: int):
    return ds if n is None else Subset(ds, stratified_subset(ds.targets, n, seed).tolist())


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
                     workers: int = 0, in_chans: int | None = None) -> dict:
    """Train the original classifier on ``device`` and write a checkpoint (all-ones memory) to ``out``.

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
    torch.manual_seed(cfg.seed)
    net = create_backbone(backbone, info.num_classes, info.in_chans, info.img_size).to(device)
    result = train_classifier(net, _limit(train, limit_train, cfg.seed), cfg, progress, should_stop, workers)
    if result["cancelled"]:
        return {"cancelled": True, "seconds": result["seconds"], "accuracy": None, "path": None}

    if half:  # evaluate exactly what will be loaded back
        net.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()})
    model = FilteredModel(backbone, info, net).to(device)
    acc = accuracy(predict(model, test, workers=workers), test.targets)
    manifest = {
        "train_config": dataclasses.asdict(cfg), "seed": cfg.seed, "unlearn_config": None,
        "backbone_description": get_spec(backbone).description,
        "train_images": len(train) if limit_train is None else min(limit_train, len(train)),
        "dataset_fingerprint": {"train": fingerprint(train), "test": fingerprint(test)},
        "metrics": {"original_accuracy": acc},
        "timings": {"train_seconds": round(result["seconds"], 1)},
    }
    if dist.any_rank(bool(should_stop and should_stop())):
        return {"cancelled": True, "seconds": result["seconds"], "accuracy": None, "path": None}
    if dist.is_main():
        save_checkpoint(model, target, manifest, half=half, overwrite=overwrite)
    dist.barrier()
    return {"cancelled": False, "accuracy": acc, "seconds": result["seconds"], "path": target}


def unlearn_checkpoint(path: str | os.PathLike, cfg: UnlearnConfig = UnlearnConfig(), out: str | os.PathLike | None = None,
                       data_dir: str | None = None, download: bool = False, limit_train: int | None = None,
                       eval_limit: int | None = None, progress: Progress | None = None,
                       should_stop: StopFlag | None = None, device: str | torch.device = "cpu",
                       workers: int = 0, force: bool = False) -> dict:
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
    manifest = model.manifest
    assert manifest is not None
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
    train = checkpoint_split(manifest, "train", data_dir, download)
    test = checkpoint_split(manifest, "test", data_dir, download)
    with torch.no_grad():  # a fresh round starts from the original network
        for p in model.alphas.values():
            p.fill_(1.0)
    result = train_memory(model, _limit(train, limit_train, cfg.seed), cfg, progress, should_stop, workers)
    if result["cancelled"]:
        return {"cancelled": True, "seconds": result["seconds"], "single": None, "path": None}
    digest = dist.check_identical(model.memory, "memory matrices")
    report = evaluate(model, test, limit=eval_limit, workers=workers)
    if dist.any_rank(bool(should_stop and should_stop())):
        return {"cancelled": True, "seconds": result["seconds"], "single": None, "path": None}
    metrics = {k: v for k, v in manifest.metrics.items() if k != "evaluation"}  # stale after a new round
    fields = {
        **manifest.recorded(),
        "unlearn_config": dataclasses.asdict(cfg),
        "metrics": {**metrics, "unlearn_eval": {"limit": eval_limit, **report["single"]}},
        "timings": {**manifest.timings, "unlearn_seconds": round(result["seconds"], 1)},
    }
    if dist.is_main():
        save_checkpoint(model, target, fields, half=manifest.storage_dtype == "float16", overwrite=in_place or force,
                        carry=[MODEL_FILE, "retrain"] if in_place else ())
    dist.barrier()
    return {"cancelled": False, "seconds": result["seconds"], "single": report["single"], "path": target,
            "memory_digest": digest, "world_size": dist.world_size()}
