"""Random labels (RL): fine-tune on the forget set with random wrong labels, mixed with retain data.

Golatkar et al., "Eternal Sunshine of the Spotless Net" (CVPR 2020) and Graves et al.,
"Amnesiac Machine Learning" (AAAI 2021). Each step draws a retain batch ``(x_r, y_r)`` and
a forget batch ``x_f`` whose labels are replaced by ``y~``, drawn uniformly among the
*other* classes (fresh draws every step), and takes one SGD step (momentum, weight decay,
cosine lr) on the cross-entropy of the concatenated batch::

    L = CE(f([x_r; x_f]), [y_r; y~])        (mean over all images of the batch)

The retain images keep the other classes intact while the forget images are pushed away
from their true label.

Defaults, measured on ``checkpoints/fmnist-cnn`` (one Fashion-MNIST class forgotten, 1 CPU
thread): test accuracy on the forgotten class 0% for classes 0, 2 and 6, retain accuracy
93-96% (original 93-94%), ~17 s.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import Dataset

from ..configs import RandomLabelsConfig as Config
from ..engine import Progress, StopFlag
from ..methods import Method, register_method
from ._common import (
    batches,
    ce,
    check_data,
    cosine,
    device_of,
    finish,
    seeded,
    sgd,
    train_loop,
    trainable_copy,
    wrong_labels,
)


def relabel_step(model: nn.Module, opt: torch.optim.Optimizer, retain_stream, forget_stream, num_classes: int,
                 g: torch.Generator, device: torch.device) -> dict:
    """Forward/backward of one mixed batch (forget relabelled); the caller steps the optimiser. Returns metrics."""
    (xr, yr), (xf, yf) = next(retain_stream), next(forget_stream)
    y = torch.cat([yr, wrong_labels(yf, num_classes, g)]).to(device)
    logits = model(torch.cat([xr, xf]).to(device))
    loss = ce(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        forget_true = (logits[len(yr):].argmax(1).cpu() == yf).float().mean()
    return {"loss": loss.detach(), "forget_batch_acc": forget_true}


def unlearn(net: nn.Module, retain: Dataset, forget: Dataset, num_classes: int, cfg: Config = Config(), seed: int = 0,
            progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict:
    """Run random-label fine-tuning on a copy of ``net``. Returns the common result dict."""
    start = time.perf_counter()
    check_data(retain, forget)
    model, flags = trainable_copy(net)
    device = device_of(model)
    g = torch.Generator().manual_seed(seed)
    retain_stream, forget_stream = batches(retain, cfg.batch_size, g), batches(forget, cfg.forget_batch_size, g)
    opt = sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = cosine(opt, cfg.steps)

    def step() -> dict:
        metrics = relabel_step(model, opt, retain_stream, forget_stream, num_classes, g, device)
        opt.step()
        sched.step()
        return metrics

    with seeded(seed, device):
        steps, cancelled = train_loop(model, cfg.steps, step, progress, should_stop)
    return finish(model, flags, steps, start, cancelled)


register_method(Method(
    "random_labels", "Random labels", "baseline", "forget images relabelled at random, plus retain",
    "Golatkar et al., CVPR 2020; Fan et al., SalUn, ICLR 2024 (“RL”)",
    "https://github.com/OPTML-Group/Unlearn-Saliency",
    config=Config, run=unlearn, grid={"steps": (100, 200, 400), "lr": (0.005, 0.01)}))
