"""Time what the dashboard's Forget page computes, per shipped checkpoint (no Streamlit).

    .venv/bin/python perf/live_forget.py [--limit 2000] [--repeats 5]

cold = load the checkpoint + preprocess the evaluation subset + predictions of the original
model; toggle = predictions on the same subset under a new forget set (what a click in the
sidebar costs before caching). Prints medians over forget sets {c} and {c, c+1}.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

import wfexplain
from wfexplain.data import load_dataset, stratified_subset


def predict(model, x, forget):
    with torch.inference_mode():
        return torch.cat([model(b, forget=forget).argmax(1) for b in x.split(500)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    out = {"threads": torch.get_num_threads(), "limit": args.limit, "checkpoints": {}}
    for d in sorted(Path("checkpoints").glob("*/manifest.json")):
        start = time.perf_counter()
        model = wfexplain.load(d.parent)
        test = load_dataset(model.info.name, "test", img_size=model.info.img_size)
        idx = stratified_subset(test.targets, args.limit, 0).tolist()
        x, _ = next(iter(DataLoader(Subset(test, idx), batch_size=len(idx))))
        predict(model, x, None)
        cold = time.perf_counter() - start
        toggles = []
        for r in range(args.repeats):
            c = r % model.num_classes
            for forget in ([c], [c, (c + 1) % model.num_classes]):
                t = time.perf_counter()
                predict(model, x, forget)
                toggles.append(time.perf_counter() - t)
        out["checkpoints"][d.parent.name] = {"cold_seconds": round(cold, 3),
                                             "toggle_median_seconds": round(statistics.median(toggles), 3)}
        print(d.parent.name, out["checkpoints"][d.parent.name], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
