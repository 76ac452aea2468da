#!/usr/bin/env bash
# The memory evidence of issue 11 on a CPU: copy memory (delay 1,000) and selective copy
# (length 1,000) for suRNN (gate at about 17% updates), GRU and LSTM with the same hidden
# size (64) and the same step budget (500 steps of batch 32), seeds 0 1 2; then the curves,
# the table and the gate raster under results/memory/.
#
#   bash scripts/memory_evidence.sh            # 18 runs, 2 at a time, 1 thread each
#   SEEDS="0" TASKS="copy_memory" bash scripts/memory_evidence.sh   # a part
#   JOBS=1 THREADS=2 bash scripts/memory_evidence.sh                # one at a time
#
# Settings: configs/experiment/memory/{copy_memory,selective_copy}_cpu.yaml. Runs go to
# $OUT/<run_id> with run_id memory-<task>-<model>-s<seed>: rerunning the script resumes
# unfinished runs and leaves finished ones as they are (a finished run only re-tests).
# suRNN runs the compiled CPU kernel (model.options.impl=compiled: the same model as the
# eager path, 3x faster than nn.GRU per step here). On a GPU machine set DEVICE=cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-outputs/memory}
SEEDS=${SEEDS:-"0 1 2"}
TASKS=${TASKS:-"copy_memory selective_copy"}
MODELS=${MODELS:-"surnn gru lstm"}
DEVICE=${DEVICE:-auto}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
SURNN_GATE="model.options.gate.init_rate=0.17 model.options.gate.target_rate=0.17 model.options.gate.rate_penalty=1.0 model.options.impl=compiled"

cmds=()
for task in $TASKS; do
  for seed in $SEEDS; do
    for model in $MODELS; do
      extra=""
      if [ "$model" = surnn ]; then extra="$SURNN_GATE"; fi
      cmds+=("OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS $PY run.py experiment=memory/${task}_cpu model=$model seed=$seed output_dir=$OUT device=$DEVICE trainer.progress=false $extra")
    done
  done
done
mkdir -p "$OUT"
printf '%s\n' "${cmds[@]}" | xargs -P "$JOBS" -I{} bash -c 'echo "== {}" >&2; {} > /dev/null 2>>"'"$OUT"'/runs.log" || { echo "FAILED: {}" >&2; exit 255; }'
"$PY" scripts/plot_memory.py "$OUT" --out results/memory
