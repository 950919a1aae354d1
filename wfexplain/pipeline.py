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
from .checkpoint import load, save_checkpoint
from .data import fingerprint, load_dataset, stratified_subset
from .engine import Progress, StopFlag, TrainConfig, UnlearnConfig, train_classifier, train_memory
from .evaluation import evaluate, predict
from .filtering import FilteredModel
from .metrics import accuracy


def _limit(ds, n: int | None, seed: int):
    return ds if n is None else Subset(ds, stratified_subset(ds.targets, n, seed).tolist())


def train_checkpoint(dataset: str, backbone: str, out: str | os.PathLike, cfg: TrainConfig = TrainConfig(),
                     data_dir: str | None = None, download: bool = False, img_size: int | None = None,
                     limit_train: int | None = None, half: bool = False, progress: Progress | None = None,
                     should_stop: StopFlag | None = None, overwrite: bool = False, device: str | torch.device = "cpu",
                     workers: int = 0) -> dict:
    """Train the original classifier on ``device`` and write a checkpoint (all-ones memory) to ``out``.

    Returns:
        ``{"cancelled", "accuracy", "seconds", "path"}``; nothing is written when cancelled.

    Raises:
        FileExistsError: ``out`` is a non-empty directory (or a file) and ``overwrite`` is False.
    """
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; choose another directory or overwrite explicitly")
    train = load_dataset(dataset, "train", data_dir, download, img_size)
    test = load_dataset(dataset, "test", data_dir, download, img_size)
    info = train.info
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
        save_checkpoint(model, target, manifest, half=half)
    dist.barrier()
    return {"cancelled": False, "accuracy": acc, "seconds": result["seconds"], "path": target}


def unlearn_checkpoint(path: str | os.PathLike, cfg: UnlearnConfig = UnlearnConfig(), out: str | os.PathLike | None = None,
                       data_dir: str | None = None, download: bool = False, limit_train: int | None = None,
                       eval_limit: int | None = None, progress: Progress | None = None,
                       should_stop: StopFlag | None = None, device: str | torch.device = "cpu",
                       workers: int = 0) -> dict:
    """Train the memory matrices of all classes in one round (on ``device``) and save them.

    Args:
        path: checkpoint directory (its backbone stays frozen).
        cfg: the unlearning recipe.
        out: where to write the result (default: ``path`` itself; a different directory
            gets a full copy with the backbone).
        eval_limit: test images for the single-class evaluation stored in the manifest.

    Returns:
        ``{"cancelled", "seconds", "single", "path", "memory_digest", "world_size"}``; nothing is
        written when cancelled. Under torchrun the memory digest is checked equal on every rank.
    """
    model = load(path, device)
    manifest = model.manifest
    name = manifest["dataset"]["name"]
    train = load_dataset(name, "train", data_dir, download, model.info.img_size)
    test = load_dataset(name, "test", data_dir, download, model.info.img_size)
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
    metrics = {k: v for k, v in manifest.get("metrics", {}).items() if k != "evaluation"}  # stale after a new round
    manifest.update({
        "unlearn_config": dataclasses.asdict(cfg),
        "metrics": {**metrics, "unlearn_eval": {"limit": eval_limit, **report["single"]}},
        "timings": {**manifest.get("timings", {}), "unlearn_seconds": round(result["seconds"], 1)},
    })
    target = Path(out or path)
    same = target.resolve() == Path(path).resolve()
    if dist.is_main():
        save_checkpoint(model, target, manifest, half=manifest.get("storage_dtype") == "float16", save_backbone=not same)
    dist.barrier()
    return {"cancelled": False, "seconds": result["seconds"], "single": report["single"], "path": target,
            "memory_digest": digest, "world_size": dist.world_size()}
