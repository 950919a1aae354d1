"""Removal of a forget set from the weights: hard bake, prune, then repair on retain data only.

Weight filtering (Poppi et al., arXiv 2304.02049) *suppresses* a class: the gates switch
components off at inference, and a bake (:func:`wfexplain.bake`) folds them into a copy of the
weights. Fine-tuning on a few images of the class brings it back within 1-2 steps, because it is
relearned through the components that stay on (relearn time, Golatkar et al., CVPR 2020). This
module goes further, for one forget set at a time:

1. **hard bake**: every component whose gate is below ``threshold`` is zeroed;
2. **prune**: every weight that only those components feed is zeroed too — found generically, as the
   weights whose gradient on a probe batch is exactly zero once the components are off but not
   before (:func:`removal_masks`);
3. **repair**: the rest of the network is fine-tuned on images of the *retained* classes only
   (cross-entropy, Adam, BatchNorm statistics frozen), the removed weights put back to zero after
   every step. Training on retain labels pushes the forgotten classes' logits down everywhere, as
   training without them does for Retrain.

The result is a plain copy of the backbone (no hooks, same state-dict keys). It costs one short
fine-tuning per forget set, so it is an export step, not a live toggle. Its recipe is
:class:`~wfexplain.configs.RemovalConfig` (re-exported here; defaults chosen on held-out training images:
docs/method.md).
"""

from __future__ import annotations

import time
from collections.abc import Sized
from typing import cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from .configs import RemovalConfig
from .engine import Progress, StopFlag
from .evaluation.metrics import in_set
from .filtering import FilteredModel, bake
from .forget import Forget
from .forget import classes as forget_list
from .history import Recorder
from .splits import checkpoint_train_split

__all__ = ["RemovalConfig", "removal_masks", "remove", "repair", "retain_subset"]


def _grads(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    params = dict(net.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    with torch.enable_grad():
        net(x).pow(2).sum().backward()
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone() for k, p in params.items()}
    for p in params.values():
        p.grad = None
    return grads


def removal_masks(model: FilteredModel, forget: Forget, threshold: float,
                  probe: torch.Tensor) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``(hard-baked copy with the removed weights zeroed, {parameter name: bool mask of removed entries})``."""
    net = bake(model, forget, hard_threshold=threshold).eval()
    plain = bake(model, None).eval()  # the same network with every component on
    plain_params = dict(plain.named_parameters())
    before, after = _grads(plain, probe), _grads(net, probe)
    masks = {}
    with torch.no_grad():
        for name, p in net.named_parameters():
            dead = (after[name] == 0) & (before[name] != 0)  # fed only by switched-off components
            masks[name] = dead | ((p == 0) & (plain_params[name] != 0))  # and what the bake zeroed
            p.masked_fill_(masks[name], 0.0)
    return net, masks


def repair(net: nn.Module, masks: dict[str, torch.Tensor], retain: Dataset, cfg: RemovalConfig,
           progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict:
    """Fine-tune ``net`` in place on ``retain`` (BatchNorm frozen), holding every masked entry at zero.

    Returns:
        ``{"steps", "seconds", "final_loss", "cancelled"}``.
    """
    start, step, loss_avg = time.perf_counter(), 0, None
    if cfg.steps == 0:
        return {"steps": 0, "seconds": 0.0, "final_loss": None, "cancelled": False}
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(cfg.seed)
    sampler = RandomSampler(cast(Sized, retain), replacement=True, num_samples=cfg.steps * cfg.batch_size, generator=g)
    params = dict(net.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    net.eval()
    for x, y in DataLoader(retain, batch_size=cfg.batch_size, sampler=sampler):
        if should_stop and should_stop():
            return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_avg, "cancelled": True}
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(net(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].masked_fill_(m, 0.0)
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if progress:
            progress(step, cfg.steps, {"loss": loss_avg})
    return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_avg, "cancelled": False}


def retain_subset(train: Dataset, forget: Forget) -> Subset:
    """The images of ``train`` (a dataset with ``targets``) outside the forget set."""
    keep = ~in_set(torch.as_tensor(train.targets), forget_list(forget))  # type: ignore[attr-defined]
    return Subset(train, torch.nonzero(keep).flatten().tolist())


def remove(model: FilteredModel, forget: Forget, train: Dataset | None = None, cfg: RemovalConfig = RemovalConfig(),
           progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict:
    """Hard-bake, prune and repair one forget set (see the module docstring); ``model`` is left untouched.

    ``train`` is a training split (with ``targets``; default: the images the checkpoint's backbone was
    trained on, its validation split left out); the repair only sees its retained classes.

    Returns:
        ``{"model", "masks", "removed_weights", "steps", "seconds", "final_loss", "cancelled", "history"}``;
        ``model`` is a plain backbone in eval mode (None when cancelled), ``masks`` maps each parameter's name to
        a bool tensor of its removed entries (held at zero), ``history`` the repair's per-step reports
        (:class:`wfexplain.history.Recorder` rows, stage ``removal``).
    """
    classes = forget_list(forget, model.num_classes, allow_empty=False)
    if len(classes) >= model.num_classes:
        raise ValueError(f"remove needs at least one class to keep; got all {model.num_classes}")
    if train is None:
        train = checkpoint_train_split(model.checkpoint_manifest())
    retain = retain_subset(train, classes)
    probe = torch.stack([retain[i][0] for i in range(min(16, len(retain)))])
    net, masks = removal_masks(model, classes, cfg.threshold, probe.to(next(model.parameters()).device))
    history = Recorder("removal")
    result = repair(net, masks, retain, cfg, history.wrap(progress), should_stop)
    removed = int(sum(int(m.sum()) for m in masks.values()))
    return {"model": None if result["cancelled"] else net.eval(), "masks": masks, "removed_weights": removed, **result,
            "history": history.rows}
