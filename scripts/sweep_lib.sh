# Shared by the sweeps (scripts/vit_sweep.sh, scripts/resnet_sweep.sh): `run NAME UNLEARN-OPTIONS...`
# unlearns $BASE into runs/$PREFIX-NAME (one thread, nice), then scores singles, pairs, triples and
# 5-sets on 2,000 validation images into runs/logs/$PREFIX-NAME-val.json (read by choose_on_validation.py).
W=${W:-.venv/bin/wfexplain}
run() {
  local name=$1; shift
  OMP_NUM_THREADS=1 nice -n 10 $W unlearn --checkpoint "$BASE" --out "runs/$PREFIX-$name" --force "$@" \
    > "runs/logs/$PREFIX-$name.log" 2>&1
  OMP_NUM_THREADS=1 nice -n 10 $W evaluate --checkpoint "runs/$PREFIX-$name" --split validation --limit 2000 \
    --sets 1 2 3 5 --json > "runs/logs/$PREFIX-$name-val.json" 2>> "runs/logs/$PREFIX-$name.log"
}
mkdir -p runs/logs
