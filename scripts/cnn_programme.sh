#!/usr/bin/env bash
# The CNN programme of docs/benchmark.md: the CNN checkpoints re-made with a validation split, their Retrain
# oracles, and the fmnist-cnn benchmark (tuned on validation, then scored), split into two lanes of one thread
# each for a 2-core machine. Every step is skipped when its output exists (the run store keeps tuning points and
# scored results), so the programme resumes where it stopped: run both lanes again after an interruption.
# Usage: scripts/cnn_programme.sh LANE ROOT        (LANE: a or b; ROOT: where the checkpoints are made)
#        scripts/cnn_programme.sh final ROOT       (after both lanes: aggregates into ROOT/fmnist-cnn/benchmark.*)
set -euo pipefail
LANE=$1 ROOT=$2
W=${W:-.venv/bin/wfexplain}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
F=$ROOT/fmnist-cnn M=$ROOT/mnist-cnn
SETS=(--pairs 3 --triples 3)                  # (2,4) (2,6) (2,5) and (4,6,9) (4,5,8) (0,5,7): benchmark_sets(10, [], 3, 3)
SEEDS=(--seeds 3 --combination-seeds 1)       # combinations on seed 0 only: each seed needs 6 more Retrains
A=(wf wf_removed finetune l1_sparse)            # the methods each lane tunes and scores: about equal CPU time
B=(neggrad_plus random_labels salun scrub ssd)

made() { test -f "$1/manifest.json"; }
unlearned() { .venv/bin/python -c "import json,sys; m=json.load(open(sys.argv[1]+'/manifest.json')); sys.exit(0 if 'unlearn_eval' in m['metrics'] else 1)" "$1"; }
oracle() {  # CKPT SEED CLASS...: one Retrain oracle
  local c=$1 s=$2; shift 2
  local key; key=$(IFS=-; echo "$*")
  made "$c/retrain/forget-$key-seed$s" || $W retrain --checkpoint "$c" --forget "$@" --seed "$s" -q
}
wait_for() { until made "$1"; do sleep 60; done; }
every_oracle() {  # wait until the other lane's oracles exist too (a missing one would be trained twice)
  for c in 0 1 2 3 4 5 6 7 8 9; do wait_for "$F/retrain/forget-$c-seed0"; done
  for k in 2-4 2-6 2-5 4-6-9 4-5-8 0-5-7; do wait_for "$F/retrain/forget-$k-seed0"; done
  if [ "${1:-}" = all ]; then for s in 1 2; do for c in 0 1 2 3 4 5 6 7 8 9; do wait_for "$F/retrain/forget-$c-seed$s"; done; done; fi
}
bench() { $W benchmark --checkpoint "$F" "${SETS[@]}" "${SEEDS[@]}" -q "$@"; }

case $LANE in
a)
  made "$F" || $W train --dataset fashion-mnist --backbone cnn --out "$F" --epochs 12 -q
  for c in 0 1 2 3 4 5 6 7 8 9; do oracle "$F" 0 $c; done
  oracle "$F" 0 2 4; oracle "$F" 0 2 6; oracle "$F" 0 2 5
  for c in 0 1 2 3; do oracle "$F" 1 $c; oracle "$F" 2 $c; done
  wait_for "$F"; until unlearned "$F"; do sleep 60; done
  every_oracle
  bench --methods "${A[@]}" --tune-only
  every_oracle all
  bench --methods "${A[@]}" --out "$ROOT/bench-a"
  ;;
b)
  made "$M" || $W train --dataset mnist --backbone cnn --out "$M" --epochs 30 -q
  unlearned "$M" || $W unlearn --checkpoint "$M" --steps 2000 --force -q
  for c in 0 1 2 3 4 5 6 7 8 9; do oracle "$M" 0 $c; done
  wait_for "$F"
  unlearned "$F" || $W unlearn --checkpoint "$F" --force -q
  oracle "$F" 0 4 6 9; oracle "$F" 0 4 5 8; oracle "$F" 0 0 5 7
  for c in 4 5 6 7 8 9; do oracle "$F" 1 $c; oracle "$F" 2 $c; done
  every_oracle
  bench --methods "${B[@]}" --tune-only
  every_oracle all
  bench --methods "${B[@]}" --out "$ROOT/bench-b"
  ;;
final)
  bench   # every tuning point and result is stored: only aggregates, then writes benchmark.* into $F
  ;;
esac
