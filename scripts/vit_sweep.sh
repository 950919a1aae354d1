#!/usr/bin/env bash
# Issue 14: choose the ViT's set-size schedule (max_set_size k) and forget weight (lambda_f) on the
# validation split, never on test. Each run unlearns the same base model (runs/base-vit, trained with
# `wfexplain train --dataset fashion-mnist --backbone vit --out runs/base-vit --epochs 24 --flip`,
# which holds out a seeded, stratified 10% of the training split) into its own directory, then scores
# singles, pairs, triples and 5-sets on 2,000 validation images. Two runs at a time, one thread each.
set -euo pipefail
BASE=${BASE:-runs/base-vit}
PREFIX=vit
source "$(dirname "$0")/sweep_lib.sh"
run k2-lf3 --max-set-size 2 --lambda-f 3 &
run k3-lf3 --max-set-size 3 --lambda-f 3 &
wait
run k3-lf1 --max-set-size 3 --lambda-f 1 &
run k2-lf3-lr2 --max-set-size 2 --lambda-f 3 --lambda-r 2 &
wait
run k5-lf3 --max-set-size 5 --lambda-f 3 &
wait
# Round 3 (after the 2026-12-02 second session's results; k5-lf3 above was stopped at 2% for machine time):
# twice or three times the steps and a stronger retain weight, one run at a time beside the ResNet-18 base training.
run k2-lf3-lr1.5-s1872 --max-set-size 2 --lambda-f 3 --lambda-r 1.5 --steps 1872
run k3-lf3-lr1.5-s1872 --max-set-size 3 --lambda-f 3 --lambda-r 1.5 --steps 1872
# k3-lf3-lr2-s2808 was started and stopped at 8%: k3 had just cost singles 5.4% mean / 42.5% max at λr 1.5
run k2-lf4-lr2-s2808 --max-set-size 2 --lambda-f 4 --lambda-r 2 --steps 2808
# Every run above gated heads and fc1 only: runs/base-vit recorded those sites before the residual kinds existed.
# The same settings with every site of today's discovery (scripts/regate_vit.py writes runs/base-vit-residual):
BASE=runs/base-vit-residual run residual-k2-lf4-lr2-s2808 --max-set-size 2 --lambda-f 4 --lambda-r 2 --steps 2808
