"""Training throughput of `train --bf16` (bfloat16 autocast, channels-last) against float32.

Times training steps of a registered backbone (batch 128, 28x28, one thread by default) in one
process, alternating the two modes so machine noise hits both, and prints the median images per
second of each and their ratio. Usage: python scripts/bench_bf16.py [--backbone resnet18] [--steps 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from wfexplain.backbones import create_backbone, list_backbones


def step_seconds(model: torch.nn.Module, bf16: bool, x: torch.Tensor, y: torch.Tensor,
                 opt: torch.optim.Optimizer) -> float:
    layout = torch.channels_last if bf16 else torch.contiguous_format
    model.to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18", choices=list_backbones())
    ap.add_argument("--steps", type=int, default=15, help="timed steps per mode (after 3 warm-up steps each)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    times: dict[bool, list[float]] = {False: [], True: []}
    models = {bf: create_backbone(args.backbone, 10, 1, 28).train() for bf in times}
    opts = {bf: torch.optim.AdamW(m.parameters()) for bf, m in models.items()}
    for i in range(3 + args.steps):
        for bf in times:
            t = step_seconds(models[bf], bf, x, y, opts[bf])
            if i >= 3:
                times[bf].append(t)
    rate = {bf: 128 / statistics.median(ts) for bf, ts in times.items()}
    print(f"{args.backbone}, {args.threads} thread(s), median of {args.steps} steps: "
          f"float32 {rate[False]:.0f} img/s, bf16 {rate[True]:.0f} img/s, ratio {rate[True] / rate[False]:.2f}x")


if __name__ == "__main__":
    main()
