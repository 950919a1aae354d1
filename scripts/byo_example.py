"""Bring your own model, end to end on real data: a timm model trained in plain PyTorch, then wfexplain.

Trains ``timm:resnet10t`` (1 input channel) on a stratified subset of Fashion-MNIST with its own
normalisation, saves a ``.pth`` training checkpoint, and runs ``wfexplain import``, ``unlearn`` and
``evaluate`` on it through the command line, printing each step's measured numbers.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/byo_example.py --out runs/byo [--train 12000 --epochs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader, Subset

from wfexplain.data import DatasetInfo, load_dataset, stratified_subset, with_preprocessing

MEAN, STD = (0.25,), (0.35,)  # the user's own normalisation (not the dataset default)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/byo")
    ap.add_argument("--train", type=int, default=12_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset("fashion-mnist", "train")
    info = DatasetInfo(train.info.name, train.info.class_names, 1, 28, MEAN, STD)
    train = with_preprocessing(train, info)
    part = Subset(train, stratified_subset(train.targets, args.train, 0).tolist())
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=10, in_chans=1)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    start = time.perf_counter()
    net.train()
    for epoch in range(args.epochs):
        for x, y in DataLoader(part, batch_size=128, shuffle=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        print(f"epoch {epoch + 1}/{args.epochs} done at {time.perf_counter() - start:.0f} s", flush=True)
    torch.save({"epoch": args.epochs, "state_dict": net.state_dict()}, out / "resnet10t.pth")
    print(json.dumps({"plain_pytorch_train_seconds": round(time.perf_counter() - start, 1)}))
    ck = out / "checkpoint"
    w = [sys.executable, "-m", "wfexplain"]
    steps = [
        [*w, "import", "--arch", "timm:resnet10t", "--weights",
         str(out / "resnet10t.pth"), "--dataset", "fashion-mnist", "--mean", *map(str, MEAN), "--std", *map(str, STD),
         "--out", str(ck), "--force"],
        [*w, "unlearn", "--checkpoint", str(ck), "--steps", str(args.steps), "--limit-train", str(args.train),
         "--eval-limit", "2000"],
        [*w, "evaluate", "--checkpoint", str(ck), "--json"],
    ]
    for cmd in steps:
        t = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(f"$ {' '.join(cmd[2:])}\n  {time.perf_counter() - t:.1f} s; {result.stderr.strip().splitlines()[-2:]}")
    report = json.loads(result.stdout)
    print(json.dumps({k: report[k] for k in ("num_images", "original_accuracy", "single")}, indent=1))


if __name__ == "__main__":
    main()
