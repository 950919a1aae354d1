"""Speed of attributions and training: medians and ratios measured in one run on one machine.

    .venv/bin/python perf/speed.py [--repeats 7] [--json out.json]

Forward passes and the live views are measured by ``perf/live.py``.

1. attribution: one 28x28 image, every Captum method of the Explain page, every shipped checkpoint.
2. training throughput: images/s of ``train_classifier`` (plain training) vs ``train_memory``
   (the WF round, backbone frozen), every backbone, on 2,560 Fashion-MNIST training images.
Prints a Markdown table per section and (with ``--json``) writes every number.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch
from timing import median_time  # perf/timing.py (scripts run as perf/NAME.py)
from torch.utils.data import Subset

import wfexplain
from wfexplain import explain
from wfexplain.backbones import create_backbone, list_backbones
from wfexplain.data import load_dataset, stratified_subset
from wfexplain.engine import TrainConfig, UnlearnConfig, train_classifier, train_memory
from wfexplain.filtering import FilteredModel


def attribution(repeats: int) -> list[dict]:
    rows = []
    for d in sorted(Path("checkpoints").glob("*/manifest.json")):
        model = wfexplain.load(d.parent)
        test = load_dataset(model.info.name, "test", img_size=model.info.img_size)
        x = test[0][0][None]
        for method in explain.METHODS:
            t = median_time(partial(explain.attribute, model, x, 0, method, forget=[0]), max(1, repeats // 2))
            rows.append({"checkpoint": d.parent.name, "method": method, "seconds": t})
    return rows


def throughput(info) -> list[dict]:
    train = load_dataset("fashion-mnist", "train")
    sub = Subset(train, stratified_subset(train.targets, 2560, 0).tolist())
    rows = []
    for name in list_backbones():
        torch.manual_seed(0)
        net = create_backbone(name, info.num_classes, info.in_chans, info.img_size)
        r = train_classifier(net, sub, TrainConfig(epochs=1, batch_size=128))
        plain = r["steps"] * 128 / r["seconds"]
        model = FilteredModel(name, info, net)
        r = train_memory(model, sub, UnlearnConfig(steps=10, batch_size=256))
        wf = r["steps"] * 256 / r["seconds"]
        rows.append({"backbone": name, "plain_img_per_s": plain, "wf_img_per_s": wf, "wf_over_plain": wf / plain})
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|",
                      *("| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()
    info = wfexplain.load("checkpoints/fmnist-cnn").info
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    for name, fn in (("attribution", lambda: attribution(args.repeats)), ("training", lambda: throughput(info))):
        out[name] = fn()
        print(f"\n## {name}\n\n{table(out[name])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
