"""Training loops: the original classifier and the memory matrices of all classes.

Loops take a frozen config dataclass (:mod:`wfexplain.configs`, re-exported here), report progress through a callback
``progress(step, total, metrics)``, stop cleanly when ``should_stop()`` turns True, and
return a dict (``cancelled`` tells whether they finished). Orchestration (loading data,
saving checkpoints) lives in :mod:`wfexplain.pipeline`. The unlearning round follows
Poppi et al., arXiv 2304.02049: one round trains the filters of every class at once.

Under ``torchrun`` the same loops run data-parallel (:mod:`wfexplain.distributed`): each rank
gets ``batch_size / world_size`` images of every step from a ``DistributedSampler``, the
trained parameters are wrapped in ``DistributedDataParallel`` (gradients all-reduced), and
the unlearning objective is computed on the global batch, so W processes follow the same
trajectory as one process with the same seed and global batch (up to float rounding).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as dist
from .configs import TrainConfig, UnlearnConfig
from .data.base import dataset_len
from .filtering import FilteredModel
from .objectives import sample_forget_sets, wf_objective

__all__ = ["Progress", "StopFlag", "TrainConfig", "UnlearnConfig", "reset_memory", "train_classifier",
           "train_memory"]

Progress = Callable[[int, int, dict], None]
StopFlag = Callable[[], bool]


def _loader(ds: Dataset, batch_size: int, seed: int, workers: int = 0, multiple: int = 1) -> DataLoader:
    """This rank's share of every global batch of ``batch_size`` (a seeded permutation per epoch)."""
    w = dist.world_size()
    if batch_size % (w * multiple):
        raise ValueError(f"batch_size={batch_size} must be divisible by {w * multiple} "
                         f"({w} process(es){' x 2 halves' if multiple == 2 else ''})")
    sampler: DistributedSampler[int] = DistributedSampler(ds, num_replicas=w, rank=dist.rank(), shuffle=True, seed=seed,
                                                          drop_last=True)
    return DataLoader(ds, batch_size=batch_size // w, sampler=sampler, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0)


def _wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around the trained parameters when running under torchrun; the model itself otherwise."""
    if dist.world_size() == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _stop(should_stop: StopFlag | None) -> bool:
    return dist.any_rank(bool(should_stop and should_stop()))


def _augment(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if cfg.flip:
        theta[:, 0, 0] = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta[:, :, 2] = (torch.rand(b, 2, generator=g) * 2 - 1) * cfg.shift * 2  # grid spans [-1, 1]
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return _erase(x, cfg.erase, g) if cfg.erase else x


def _erase(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al., AAAI 2020; torchvision's defaults): with probability ``p``, a rectangle
    of 2-33% of the image, aspect ratio 0.3-3.3, is set to 0 (the dataset mean once normalised)."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(0.02, 0.33, generator=g) * h * w
    ratio = torch.empty(b).uniform_(math.log(0.3), math.log(1 / 0.3), generator=g).exp()
    eh, ew = (area * ratio).sqrt().round().clamp(1, h), (area / ratio).sqrt().round().clamp(1, w)
    top = (torch.rand(b, generator=g) * (h - eh + 1)).floor()
    left = (torch.rand(b, generator=g) * (w - ew + 1)).floor()
    rows, cols = torch.arange(h)[None], torch.arange(w)[None]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & (torch.rand(b, generator=g) < p)[:, None, None]
    return x.masked_fill(mask[:, None].to(x.device), 0.0)


def train_classifier(model: nn.Module, train: Dataset, cfg: TrainConfig, progress: Progress | None = None,
                     should_stop: StopFlag | None = None, workers: int = 0) -> dict:
    """Train an ordinary classifier with cross-entropy on the model's device.

    ``workers`` data-loading processes stream the images (a disk-backed image folder larger
    than memory trains). Under torchrun the model is wrapped in DDP; BatchNorm statistics
    stay per process.

    Returns:
        ``{"steps", "seconds", "final_loss", "cancelled"}``.
    """
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1 + dist.rank())
    device = next(model.parameters()).device
    loader = _loader(train, cfg.batch_size, cfg.seed, workers)
    if len(loader) == 0:
        raise ValueError(f"training needs at least batch_size={cfg.batch_size} images, got {dataset_len(train)}")
    total = cfg.epochs * len(loader)
    net = _wrap(model, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    sampler = loader.sampler
    assert isinstance(sampler, DistributedSampler)  # _loader always gives one
    layout = torch.channels_last if cfg.bf16 else torch.contiguous_format
    model.to(memory_format=layout).train()
    step, loss_avg, start, cancelled = 0, None, time.perf_counter(), False
    try:
        for epoch in range(cfg.epochs):
            sampler.set_epoch(epoch)
            for x, y in loader:
                if cancelled := _stop(should_stop):
                    break
                x, y = _augment(x.to(device), cfg, g).contiguous(memory_format=layout), y.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    loss = F.cross_entropy(net(x), y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
                if progress:
                    progress(step, total, {"loss": loss_avg})
            if cancelled:
                break
    finally:
        model.to(memory_format=torch.contiguous_format).eval()  # saved and served in the usual layout
    return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_avg, "cancelled": cancelled}


@torch.no_grad()
def reset_memory(model: FilteredModel) -> None:
    """Every alpha back to 1 (the original network): where a fresh unlearning round starts."""
    for p in model.alphas.values():
        p.fill_(1.0)


def train_memory(model: FilteredModel, train: Dataset, cfg: UnlearnConfig, progress: Progress | None = None,
                 should_stop: StopFlag | None = None, workers: int = 0) -> dict:
    """Train the memory matrices of all classes in one round (backbone frozen).

    Each batch is split: the first half gets forget sets containing each sample's
    label, the second half retain sets excluding it; both halves run in one forward
    pass with per-sample gates. Alphas are clamped to [0, 1] after every step.

    Returns:
        ``{"steps", "seconds", "final", "cancelled"}`` where ``final`` holds smoothed losses.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    loader = _loader(train, cfg.batch_size, cfg.seed, workers, multiple=2)
    if len(loader) == 0:
        raise ValueError(f"unlearning needs at least batch_size={cfg.batch_size} training images, got {dataset_len(train)}")
    total = cfg.steps
    alphas = list(model.alphas.values())
    device = alphas[0].device
    net = _wrap(model, device)
    opt = torch.optim.Adam(alphas, lr=cfg.lr)
    n, w, r = model.num_classes, dist.world_size(), dist.rank()
    sampler = loader.sampler
    assert isinstance(sampler, DistributedSampler)  # _loader always gives one
    model.train()
    avg: dict[str, float] = {}
    step, epoch, start = 0, 0, time.perf_counter()
    while step < total:  # as many passes over the data as the step budget needs
        sampler.set_epoch(epoch)
        epoch += 1
        for x, y in loader:
            if step >= total:
                break
            if _stop(should_stop):
                return {"steps": step, "seconds": time.perf_counter() - start, "final": avg, "cancelled": True}
            # Global position j*W + r is local position j of rank r; the first global half forgets.
            y_all, half, local_half = dist.interleave(y), cfg.batch_size // 2, x.shape[0] // 2
            mask = torch.cat([
                sample_forget_sets(y_all[:half], n, cfg.max_set_size, contains_label=True, generator=g)[r::w],
                sample_forget_sets(y_all[half:], n, cfg.max_set_size, contains_label=False, generator=g)[r::w],
            ])
            x, y = x.to(device), y.to(device)
            logits = net(x, forget=mask.to(device))
            out = wf_objective(logits[:local_half], y[:local_half], logits[local_half:], y[local_half:], alphas,
                               cfg.lambda_r, cfg.lambda_f, cfg.lambda_s, cfg.eps, cfg.ce_cap or None,
                               reduce=dist.mean_across)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            model.clamp_()
            step += 1
            for k, v in out.items():  # rank-local except "forget" (global); only rank 0 reports
                avg[k] = v.item() if k not in avg else 0.98 * avg[k] + 0.02 * v.item()
            if progress:
                progress(step, total, dict(avg))
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - start, "final": avg, "cancelled": False}
