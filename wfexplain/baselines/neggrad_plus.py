"""NegGrad+: descend on the retain loss while ascending on the forget loss.

Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023; the SCRUB paper),
baseline NegGrad+. Each step draws a retain batch ``(x_r, y_r)`` and a forget batch
``(x_f, y_f)`` and takes one SGD step (momentum, weight decay, cosine lr) on::

    L = beta * CE(f(x_r), y_r) - (1 - beta) * CE(f(x_f), y_f)

Both batches go through one forward pass (BatchNorm sees a mixed batch, as in training).
The forget term is unbounded, so the step budget and ``beta`` keep the ascent from
wrecking the retained classes.

Defaults, measured on ``checkpoints/fmnist-cnn`` (one Fashion-MNIST class forgotten, 1 CPU
thread): test accuracy on the forgotten class 0% for classes 0, 2 and 6, retain accuracy
93-96% (original 93-94%), ~16 s. With ``beta = 0.95`` the forget CE explodes (to ~700 in
100 steps) and the retain accuracy falls to 71-76%.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import Dataset

from ..configs import NegGradPlusConfig as Config
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
)


def unlearn(net: nn.Module, retain: Dataset, forget: Dataset, num_classes: int, cfg: Config = Config(), seed: int = 0,
            progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict:
    """Run NegGrad+ on a copy of ``net``. Returns the common result dict."""
    start = time.perf_counter()
    check_data(retain, forget)
    model, flags = trainable_copy(net)
    device = device_of(model)
    g = torch.Generator().manual_seed(seed)
    retain_stream, forget_stream = batches(retain, cfg.batch_size, g), batches(forget, cfg.forget_batch_size, g)
    opt = sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = cosine(opt, cfg.steps)

    def step() -> dict:
        (xr, yr), (xf, yf) = next(retain_stream), next(forget_stream)
        logits = model(torch.cat([xr, xf]).to(device))
        retain_ce, forget_ce = ce(logits[: len(yr)], yr.to(device)), ce(logits[len(yr):], yf.to(device))
        loss = cfg.beta * retain_ce - (1 - cfg.beta) * forget_ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.detach(), "retain_ce": retain_ce.detach(), "forget_ce": forget_ce.detach()}

    with seeded(seed, device):
        steps, cancelled = train_loop(model, cfg.steps, step, progress, should_stop)
    return finish(model, flags, steps, start, cancelled)


register_method(Method(
    "neggrad_plus", "NegGrad+", "baseline", "descent on retain, ascent on forget",
    "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023",
    "https://github.com/meghdadk/SCRUB",
    config=Config, run=unlearn, grid={"steps": (100, 200, 400), "lr": (0.005, 0.01)}))
