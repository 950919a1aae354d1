#!/usr/bin/env bash
# Issue 14: the ResNet-18 base model and its set-size schedule, both chosen on the validation split.
# Two base candidates were trained side by side, one thread each (bf16 autocast, channels-last):
#   wfexplain train --dataset fashion-mnist --backbone resnet18 --out runs/base-r18-a --epochs 30 --flip --half --bf16
#   wfexplain train ... --out runs/base-r18-b (the same) --erase 0.5
# This script takes the one with the higher validation accuracy (metrics.validation_accuracy in its
# manifest, never the test accuracy), unlearns it with max_set_size k = 2, 3 and 5 (side by side) and
# scores each on 2,000 validation images; scripts/choose_on_validation.py runs/logs/r18-*-val.json
# then picks k.
set -euo pipefail
BASE=$(.venv/bin/python - <<'PY'
import json
val = {c: json.load(open(f"runs/base-r18-{c}/manifest.json"))["metrics"]["validation_accuracy"] for c in "ab"}
print(f"runs/base-r18-{max(val, key=val.get)}")
PY
)
echo "base chosen on validation: $BASE"
PREFIX=r18
source "$(dirname "$0")/sweep_lib.sh"
run k2 --max-set-size 2 &
run k3 --max-set-size 3 &
run k5 --max-set-size 5 &
wait
