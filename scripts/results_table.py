"""Print the README's results table from the shipped checkpoints' manifests.

    .venv/bin/python scripts/results_table.py

The numbers are those `wfexplain evaluate --checkpoint DIR --pairs --record` stored in each
manifest (full test split); times are the training and unlearning wall-clock seconds.
"""

import json
from pathlib import Path

TARGETS = {"fmnist-cnn": 0.91, "mnist-cnn": 0.95, "fmnist-resnet18": 0.92, "fmnist-vit": 0.88}


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


print("| checkpoint | original accuracy (target) | single: forget mean / max ↓ | single: retain ↑ (original) "
      "| pairs: forget mean / max ↓ | pairs: retain ↑ (original) | train / unlearn time | size |")
print("|---|---|---|---|---|---|---|---|")
for name, target in TARGETS.items():
    d = Path("checkpoints") / name
    m = json.loads((d / "manifest.json").read_text())
    ev = m["metrics"]["evaluation"]
    s, p, t = ev["single"], ev["pairs"], m["timings"]
    size = sum(f.stat().st_size for f in d.iterdir()) / 2**20
    print(f"| `{name}` | {pct(ev['original_accuracy'])} (≥ {pct(target)}) "
          f"| {pct(s['forget_accuracy_mean'])} / {pct(s['forget_accuracy_max'])} "
          f"| {pct(s['retain_accuracy_mean'])} ({pct(s['original_retain_accuracy_mean'])}) "
          f"| {pct(p['forget_accuracy_mean'])} / {pct(p['forget_accuracy_max'])} "
          f"| {pct(p['retain_accuracy_mean'])} ({pct(p['original_retain_accuracy_mean'])}) "
          f"| {t['train_seconds']:.0f} s / {t['unlearn_seconds']:.0f} s | {size:.1f} MB |")
