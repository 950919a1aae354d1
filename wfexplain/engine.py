"""Training loops: the original classifier and the memory matrices of all classes.

Loops take a frozen config dataclass, report progress through a callback
``progress(step, total, metrics)``, stop cleanly when ``should_stop()`` turns True, and
return a dict (``cancelled`` tells whether they finished). Orchestration (loading data,
saving checkpoints) lives in :mod:`wfexplain.cli`. The unlearning round follows
Poppi et al., arXiv 2304.02049: one round trains the filters of every class at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .filtering import FilteredModel
from .objectives import sample_forget_sets, wf_objective

Progress = Callable[[int, int, dict], None]
StopFlag = Callable[[], bool]


@dataclass(frozen=True)
class TrainConfig:
    """Recipe for the original classifier."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # images per step
    lr: float = 2e-3  # AdamW peak learning rate (one-cycle schedule)
    weight_decay: float = 0.05  # AdamW weight decay
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    shift: float = 0.1  # max random translation as a fraction of the side (augmentation)
    flip: bool = False  # random horizontal flips (off: digits are not symmetric)
    seed: int = 0  # seeds initialisation, shuffling and augmentation

    def __post_init__(self):
        _check_positive(self, "epochs", "batch_size", "lr")


@dataclass(frozen=True)
class UnlearnConfig:
    """Recipe for the memory matrices (DESIGN.md §1); the backbone stays frozen."""

    steps: int = 936  # optimisation steps (936 = 4 epochs of Fashion-MNIST's 60k at batch 256)
    batch_size: int = 256  # half forget, half retain ("label expansion")
    lr: float = 1e-2  # Adam learning rate on the alphas
    lambda_r: float = 1.0  # weight of the retain cross-entropy
    lambda_f: float = 1.0  # weight of the bounded forget term 1 / (CE + eps)
    lambda_s: float = 0.1  # weight of the sparsity term mean(1 - alpha)
    eps: float = 1e-3  # keeps the forget term bounded
    ce_cap: float = 5.0  # per-sample cap on the forget CE (our addition; 0 disables)
    max_set_size: int = 2  # forget sets of size 1..k are sampled
    seed: int = 0  # seeds shuffling and set sampling

    def __post_init__(self):
        _check_positive(self, "steps", "lr", "max_set_size")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (half forget, half retain)")


def _check_positive(cfg, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")


def _loader(ds: Dataset, batch_size: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=g)


def _augment(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if cfg.flip:
        theta[:, 0, 0] = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta[:, :, 2] = (torch.rand(b, 2, generator=g) * 2 - 1) * cfg.shift * 2  # grid spans [-1, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def train_classifier(model: nn.Module, train: Dataset, cfg: TrainConfig, progress: Progress | None = None,
                     should_stop: StopFlag | None = None) -> dict:
    """Train an ordinary classifier with cross-entropy.

    Returns:
        ``{"steps", "seconds", "final_loss", "cancelled"}``.
    """
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    loader = _loader(train, cfg.batch_size, cfg.seed)
    total = cfg.epochs * len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    model.train()
    step, loss_avg, start = 0, None, time.perf_counter()
    for _ in range(cfg.epochs):
        for x, y in loader:
            if should_stop and should_stop():
                return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_avg, "cancelled": True}
            loss = F.cross_entropy(model(_augment(x, cfg, g)), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
            if progress:
                progress(step, total, {"loss": loss_avg})
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_avg, "cancelled": False}


def train_memory(model: FilteredModel, train: Dataset, cfg: UnlearnConfig, progress: Progress | None = None,
                 should_stop: StopFlag | None = None) -> dict:
    """Train the memory matrices of all classes in one round (backbone frozen).

    Each batch is split: the first half gets forget sets containing each sample's
    label, the second half retain sets excluding it; both halves run in one forward
    pass with per-sample gates. Alphas are clamped to [0, 1] after every step.

    Returns:
        ``{"steps", "seconds", "final", "cancelled"}`` where ``final`` holds smoothed losses.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    loader = _loader(train, cfg.batch_size, cfg.seed)
    if len(loader) == 0:
        raise ValueError(f"unlearning needs at least batch_size={cfg.batch_size} training images, got {len(train)}")
    total = cfg.steps
    alphas = list(model.alphas.values())
    opt = torch.optim.Adam(alphas, lr=cfg.lr)
    n = model.num_classes
    model.train()
    step, avg, start = 0, {}, time.perf_counter()
    while step < total:  # as many passes over the data as the step budget needs
        for x, y in loader:
            if step >= total:
                break
            if should_stop and should_stop():
                return {"steps": step, "seconds": time.perf_counter() - start, "final": avg, "cancelled": True}
            half = x.shape[0] // 2
            mask = torch.cat([
                sample_forget_sets(y[:half], n, cfg.max_set_size, contains_label=True, generator=g),
                sample_forget_sets(y[half:], n, cfg.max_set_size, contains_label=False, generator=g),
            ])
            logits = model(x, forget=mask)
            out = wf_objective(logits[:half], y[:half], logits[half:], y[half:], alphas,
                               cfg.lambda_r, cfg.lambda_f, cfg.lambda_s, cfg.eps, cfg.ce_cap or None)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            model.clamp_()
            step += 1
            for k, v in out.items():
                avg[k] = v.item() if k not in avg else 0.98 * avg[k] + 0.02 * v.item()
            if progress:
                progress(step, total, dict(avg))
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - start, "final": avg, "cancelled": False}
