#!/usr/bin/env bash
# The 3-seed sparsity evidence of issue 10 (point 2) on the demo ListOps: suRNN with a
# target update rate of 0.17, of 0.5 and with the gate open, beside GRU; then the table
# (test accuracy, rate reached per layer) and the accuracy-against-rate figure.
#
#   bash scripts/rate_control_evidence.sh                 # 12 runs, 2 at a time, 1 thread each
#   JOBS=1 THREADS=2 bash scripts/rate_control_evidence.sh
#   SEEDS="0" VARIANTS="t017 gru" bash scripts/rate_control_evidence.sh   # a part
#
# Setting: configs/experiment/demo_listops.yaml (the `make demo` setting: short generated
# ListOps, 2 blocks of width 64, 1000 steps of batch 64), NOT the LRA setting. Runs go to
# $OUT/<run_id>, run_id rate-<variant>-s<seed>; a finished run is left as it is on a rerun
# (it only re-tests), an unfinished one resumes. The suRNN runs with a target rate use the
# compiled CPU kernel (model.options.impl=compiled: the same model as the eager path, faster
# at these rates); training is deterministic for a given commit, seed and thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-outputs/rate_control}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"t017 t05 open gru"}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
RESULTS=${RESULTS:-results/rate_control}

args_of() {
  case "$1" in
    t017) echo "model=surnn model.options.gate.target_rate=0.17 model.options.gate.init_rate=0.17 model.options.impl=compiled" ;;
    t05) echo "model=surnn model.options.gate.target_rate=0.5 model.options.impl=compiled" ;;
    open) echo "model=surnn model.options.gate.kind=open" ;;
    gru) echo "model=gru" ;;
    *) echo "unknown variant $1 (expected t017, t05, open, gru)" >&2; exit 2 ;;
  esac
}

cmds=()
for seed in $SEEDS; do
  for v in $VARIANTS; do
    cmds+=("OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS $PY run.py experiment=demo_listops $(args_of "$v") seed=$seed run_id=rate-$v-s$seed output_dir=$OUT logger=none trainer.progress=false")
  done
done
mkdir -p "$OUT"
printf '%s\n' "${cmds[@]}" | xargs -P "$JOBS" -I{} bash -c 'echo "== {}" >&2; {} > /dev/null 2>>"'"$OUT"'/runs.log" || { echo "FAILED: {}" >&2; exit 255; }'
$PY scripts/make_tables.py "$OUT" --out "$RESULTS" --name demo_rate_control \
  --title "Rate control on the demo ListOps: test accuracy (%) and update rate per layer" \
  --setting "demo ListOps (configs/experiment/demo_listops.yaml: generated, lengths 20-150, depth <= 5), NOT the LRA setting"
$PY scripts/make_figures.py acc-rate "$OUT" --out results/figures --name demo_listops_acc_rate
