"""SalUn: random-label unlearning restricted to the weights most salient for the forget set.

Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
Both Image Classification and Generation" (ICLR 2024). Two phases:

1. Saliency mask (eval mode, no update): accumulate the gradient of the forget cross-entropy
   over the forget set, ``g = sum_batches grad CE(f(x_f), y_f)``, and keep the weights whose
   ``|g|`` is in the top ``mask_ratio`` of *all* parameters (one global ranking, as in the
   official ``generate_mask.py``): ``m = 1[|g| >= top-k threshold]``.
2. Random-label fine-tuning (:mod:`.random_labels`: a retain batch plus a forget batch with
   random wrong labels, SGD with momentum, weight decay, cosine lr) where only salient
   weights move::

       theta <- theta - lr_t * (m ⊙ grad L),   unmasked weights reset to their original value

   (the reset also undoes weight decay and momentum on them, as the official code does).
   The official code draws the random labels over all classes; like :mod:`.random_labels`
   we exclude the true one, so every forget image is pushed away from its class.

``steps`` in the result counts every forward/backward pass: the mask batches plus the
training steps (``mask_batches`` and ``train_steps`` give both).

Defaults, measured on ``checkpoints/fmnist-cnn`` (one Fashion-MNIST class forgotten, 1 CPU
thread): test accuracy on the forgotten class 0% for classes 0, 2 and 6, retain accuracy
93-96% (original 93-94%), ~22 s (24 mask batches over the 6,000 forget images + 100 steps).
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..configs import SalUnConfig as Config
from ..data.base import dataset_len
from ..engine import Progress, StopFlag
from ..methods import Method, register_method
from ._common import batches, ce, check_data, cosine, device_of, finish, seeded, sgd, train_loop, trainable_copy
from .random_labels import relabel_step


def saliency_mask(model: nn.Module, forget: Dataset, ratio: float, batch_size: int, device: torch.device,
                  progress: Progress | None = None, should_stop: StopFlag | None = None,
                  total: int = 0) -> tuple[dict[str, torch.Tensor] | None, int]:
    """Boolean masks of the top ``ratio`` weights by ``|accumulated forget gradient|``; ``None`` if stopped."""
    was_training = model.training
    model.eval()
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    loader = DataLoader(forget, batch_size=batch_size)
    done = 0
    for x, y in loader:
        if should_stop and should_stop():
            return None, done
        loss = ce(model(x.to(device)), y.to(device))
        model.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] += p.grad
        done += 1
        if progress:
            progress(done, total or len(loader), {"forget_ce": loss.item()})
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    keep = round(ratio * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.argsort(flat, descending=True, stable=True)[:keep]] = True
    masks, offset = {}, 0
    for n, g in grads.items():
        masks[n] = chosen[offset: offset + g.numel()].view_as(g)
        offset += g.numel()
    return masks, done


def unlearn(net: nn.Module, retain: Dataset, forget: Dataset, num_classes: int, cfg: Config = Config(), seed: int = 0,
            progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict:
    """Run SalUn on a copy of ``net``. Returns the common result dict (plus ``mask_batches``, ``train_steps``)."""
    start = time.perf_counter()
    check_data(retain, forget)
    model, flags = trainable_copy(net)
    device = device_of(model)
    mask_batches = -(-dataset_len(forget) // cfg.mask_batch_size)
    total = mask_batches + cfg.steps
    with seeded(seed, device):  # DataLoader iterators draw from the global RNG
        masks, done = saliency_mask(model, forget, cfg.mask_ratio, cfg.mask_batch_size, device, progress, should_stop,
                                    total)
    if masks is None:
        return finish(None, flags, done, start, True, mask_batches=done, train_steps=0)

    g = torch.Generator().manual_seed(seed)
    retain_stream, forget_stream = batches(retain, cfg.batch_size, g), batches(forget, cfg.forget_batch_size, g)
    opt = sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = cosine(opt, cfg.steps)
    params = dict(model.named_parameters())
    theta0 = {n: p.detach().clone() for n, p in params.items()}

    def step() -> dict:
        metrics = relabel_step(model, opt, retain_stream, forget_stream, num_classes, g, device)
        for n, p in params.items():
            if p.grad is not None:
                p.grad.mul_(masks[n])
        opt.step()
        sched.step()
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(torch.where(masks[n], p, theta0[n]))
        return metrics

    def shifted(step_no: int, _total: int, metrics: dict) -> None:
        assert progress is not None  # shifted is passed on only when there is a progress callback
        progress(done + step_no, total, metrics)

    with seeded(seed, device):
        steps, cancelled = train_loop(model, cfg.steps, step, shifted if progress else None, should_stop)
    return finish(model, flags, done + steps, start, cancelled, mask_batches=done, train_steps=steps)


register_method(Method(
    "salun", "SalUn", "baseline", "random labels on the most forget-salient half of the weights",
    "Fan et al., SalUn, ICLR 2024",
    "https://github.com/OPTML-Group/Unlearn-Saliency",
    config=Config, run=unlearn, grid={"steps": (100, 200, 400), "lr": (0.005, 0.01)}))
