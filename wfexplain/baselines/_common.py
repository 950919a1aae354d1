"""Helpers shared by the baselines: seeding, batch streams, the step loop and the result dict."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..data.base import dataset_len
from ..engine import Progress, StopFlag


def check_data(retain: Dataset | None, forget: Dataset | None) -> None:
    for name, ds in (("retain", retain), ("forget", forget)):
        if ds is not None and dataset_len(ds) == 0:
            raise ValueError(f"the {name} set is empty")


def device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@contextmanager
def seeded(seed: int, device: torch.device):
    """Seed the global RNGs (dropout, ``torch.randint`` without a generator) inside the block only."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def trainable_copy(net: nn.Module) -> tuple[nn.Module, dict[str, bool]]:
    """A deep copy of ``net`` with every parameter trainable, plus the original ``requires_grad`` flags."""
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    model = copy.deepcopy(net)
    model.requires_grad_(True)
    return model, flags


def finish(model: nn.Module | None, flags: dict[str, bool], steps: int, start: float, cancelled: bool, **extra) -> dict:
    """The common result dict; the returned model is in eval mode with the input's ``requires_grad`` flags."""
    if cancelled:
        model = None
    elif model is not None:
        model.eval()
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n, True))
    return {"model": model, "steps": steps, "seconds": time.perf_counter() - start, "cancelled": cancelled, **extra}


def batches(ds: Dataset, batch_size: int, g: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless seeded stream of batches: a fresh permutation of ``ds`` per pass (last partial batch dropped)."""
    sampler = RandomSampler(cast(Sized, ds), generator=g)  # a map-style dataset: it has __len__
    loader = DataLoader(ds, batch_size=min(batch_size, dataset_len(ds)), sampler=sampler, drop_last=True)
    while True:
        yield from loader


def wrong_labels(y: torch.Tensor, num_classes: int, g: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from ``y`` for every sample."""
    if num_classes < 2:
        raise ValueError("random wrong labels need at least 2 classes")
    shift = torch.randint(1, num_classes, y.shape, generator=g)
    return (y + shift.to(y.device)) % num_classes


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay from the configured learning rate to 0 over ``steps``."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def train_loop(model: nn.Module, steps: int, step_fn: Callable[[], dict[str, torch.Tensor]],
               progress: Progress | None, should_stop: StopFlag | None) -> tuple[int, bool]:
    """Run ``step_fn`` (one optimisation step, returns its losses) ``steps`` times in train mode.

    Checks ``should_stop`` before every step and reports exponentially smoothed losses.
    Returns ``(steps done, cancelled)``.
    """
    model.train()
    avg: dict[str, float] = {}
    for step in range(steps):
        if should_stop and should_stop():
            return step, True
        for k, t in step_fn().items():
            v = float(t)
            avg[k] = v if k not in avg else 0.98 * avg[k] + 0.02 * v
        if progress:
            progress(step + 1, steps, dict(avg))
    return steps, False


Penalty = Callable[[nn.Module, int], tuple[torch.Tensor | None, dict[str, torch.Tensor]]]


def finetune_copy(net: nn.Module, retain: Dataset, cfg, seed: int, progress: Progress | None,
                  should_stop: StopFlag | None, penalty: Penalty | None = None) -> dict:
    """Fine-tune a copy of ``net`` on ``retain``: ``cfg.steps`` SGD steps (``cfg.lr``, ``momentum``, ``weight_decay``,
    cosine decay) on the cross-entropy of retain batches of ``cfg.batch_size``, plus ``penalty(model, step)`` (a term
    added to the loss, or None, and the metrics it reports). The shared loop of fine-tuning and ℓ1-sparse.
    Returns the common result dict."""
    start = time.perf_counter()
    check_data(retain, None)
    model, flags = trainable_copy(net)
    device = device_of(model)
    g = torch.Generator().manual_seed(seed)
    stream = batches(retain, cfg.batch_size, g)
    opt = sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = cosine(opt, cfg.steps)
    done = 0

    def step() -> dict:
        nonlocal done
        x, y = next(stream)
        retain_ce = ce(model(x.to(device)), y.to(device))
        term, metrics = penalty(model, done) if penalty else (None, {})
        loss = retain_ce if term is None else retain_ce + term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done += 1
        return {"loss": loss.detach(), **({"retain_ce": retain_ce.detach()} if penalty else {}), **metrics}

    with seeded(seed, device):
        steps, cancelled = train_loop(model, cfg.steps, step, progress, should_stop)
    return finish(model, flags, steps, start, cancelled)
