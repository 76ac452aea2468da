#!/usr/bin/env bash
# GPU check of the suRNN Triton kernels: what the CPU cannot show (races, out-of-bounds and
# uninitialised reads on the device, bf16, speed). Run on a machine with one CUDA GPU:
#     bash scripts/gpu_check.sh          (or make gpu-check)
#   1. the kernel tests on CUDA (tests/surnn/test_triton*.py): fp32 against the reference,
#      bf16 against the fp32 reference, real CUDA graphs against the eager loop bit for bit;
#   2. compute-sanitizer memcheck, racecheck and initcheck on small odd shapes through every
#      code path (scripts/gpu_check.py sanitize; skipped, and said so, without the tool);
#   3. a bf16 run of T=4,096 steps against float64, values and gradients, within
#      numerics.LONG_TOL (and against the torch emulation of the op's rounding);
#   4. per-step CUDA-event timings at update rates 1 and 0.17 against nn.GRU (cuDNN), bf16,
#      B=64, T=1024, D=H=1024: the step kernels, the forward's projection GEMM and the
#      backward's GEMMs timed apart, CUDA graphs and split-K on and off, next to the launch
#      model's estimate (launch.step_cost, results/bench/triton_roofline.md); training with
#      every other step closed, gradient GEMMs over the open steps and dense;
#   5. the layer with a learned rhythm (free phases) against nn.GRU (scripts/bench_surnn.py);
#   6. one JSON, results/bench/surnn_gpu_check.json (scripts/make_tables.py --gpu reads it),
#      and its tables. Budget: under 8 minutes on an H100 (the step timeouts sum to 7.75;
#      most of a first run is Triton compiling the kernels, cached for the later steps).
# Python: the project's .venv when its torch sees a GPU; else a python3 whose torch sees one
# (GPU images without network access: the kernels and the checks need only torch, triton,
# numpy, tqdm and pytest, not Hydra); else `make setup` (needs the package registries).
#   bash scripts/gpu_check.sh --dry-run   runs the same steps on the CPU (Triton interpreter,
#                                         tiny sizes, no sanitizer) to check the script itself;
#                                         CI does this.
# Exit status: 0 when every step passed, 1 otherwise (the JSON is written either way), 2
# when no CUDA GPU is seen (one line says so). The run is bounded: every step has a timeout,
# cut to what is left of 7.6 minutes; then the summary prints what to commit.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

cuda_ok() { "$1" -c "import torch, triton; assert torch.cuda.is_available()" >/dev/null 2>&1; }
has_torch() { command -v "$1" >/dev/null && "$1" -c "import torch" >/dev/null 2>&1; }
if ((DRY)); then
    PY=.venv/bin/python
    [[ -x $PY ]] || { make setup >/dev/null; }
elif [[ -x .venv/bin/python ]] && cuda_ok .venv/bin/python; then
    PY=.venv/bin/python
elif has_torch python3 && cuda_ok python3; then
    PY=python3
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python  # no GPU seen: the check below says so
elif has_torch python3; then
    PY=python3
else
    make setup >/dev/null || exit 1
    PY=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this tree's code, whatever is installed
$PY - "$DRY" <<'PY' || exit 2
import importlib.util, sys
missing = [m for m in ("torch", "triton", "numpy", "tqdm", "pytest") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check.sh: {sys.executable} lacks {', '.join(missing)}: run `make setup` "
             "(or carry their wheels to a machine without network)")
import torch, triton
if sys.argv[1] == "0" and not torch.cuda.is_available():
    sys.exit("gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False); "
             "--dry-run checks the script on the CPU")
from surnn.provenance import device_name
dev = device_name("cuda") if torch.cuda.is_available() else "cpu (dry run)"
print("device:", dev, "| python", sys.executable, "| torch", torch.__version__,
      "| triton", triton.__version__)
PY

if ((DRY)); then
    export TRITON_INTERPRET=1
    OUT=${GPU_CHECK_OUT:-/tmp/surnn_gpu_check_dry.json}
    DEV=(--device cpu --dry-run)
    SANITIZE=(--batch 3 --seq 3 --dim 3 --hidden 19)
    LONG=(--batch 2 --seq 8 --dim 4 --hidden 16)
    TIMING=(--dtype fp32 --batch 2 --seq 4 --dim 8 --hidden 16 --reps 1 --quick)
    BENCH=(--device cpu --dtype fp32 --batch 2 --seq 4 --dim 8 --hidden 16 --reps 1 --impl triton
           --no-train)
    TESTS=("tests/surnn/test_triton.py::test_triton_matches_reference[random-False-True-3-1-6-10]")
    SLOW=4  # the interpreter on a busy CPU: the 8-minute budget is the GPU run's
else
    unset TRITON_INTERPRET
    OUT=${GPU_CHECK_OUT:-results/bench/surnn_gpu_check.json}
    DEV=(--device cuda)
    SANITIZE=(--batch 5 --seq 7 --dim 3 --hidden 259)  # multiples of nothing; K splits
    LONG=(--batch 4 --seq 4096 --dim 64 --hidden 256)
    TIMING=(--dtype bf16 --batch 64 --seq 1024 --dim 1024 --hidden 1024 --reps 5)
    BENCH=(--device cuda --dtype bf16 --batch 64 --seq 1024 --dim 1024 --hidden 1024 --reps 5
           --impl triton)
    TESTS=(tests/surnn/test_triton.py tests/surnn/test_triton_graphs.py
           tests/surnn/test_triton_selfcheck.py)
    SLOW=1
fi
PARTS=$(mktemp -d)
LOG=$PARTS/log
OUT_RHYTHM=${OUT%.json}_rhythm.json
FAILED=()
json_str() { $PY -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
# The whole run is bounded: each step has its own timeout (seconds, x SLOW), cut to what is
# left before DEADLINE (seconds since the script started); the summary runs after it.
DEADLINE=$((455 * SLOW))
secs() {
    local own=$(($1 * SLOW)) left=$((DEADLINE - SECONDS))
    ((left < 1)) && left=1
    echo $((own < left ? own : left))
}
# bounded NAME SECONDS CMD...: CMD under timeout; says so in one line when it runs out of time
bounded() {
    local name=$1 t=$2 rc
    shift 2
    timeout "$t" "$@"
    rc=$?
    ((rc == 124)) && echo "gpu_check.sh: $name ran past its $t s and was stopped" >&2
    return $rc
}

echo "== 1. kernel tests on ${DEV[1]} =="
if bounded tests "$(secs 120)" $PY -m pytest "${TESTS[@]}" -q -x -p no:cacheprovider >"$LOG" 2>&1; then
    RESULT="passed: $(tail -1 "$LOG")"
else
    RESULT="FAILED: $(tail -1 "$LOG")"
    tail -30 "$LOG"
    FAILED+=(tests)
fi
echo "$RESULT"
echo "{\"result\": $(json_str "$RESULT")}" >"$PARTS/tests.json"

echo "== 2. compute-sanitizer on small odd shapes =="
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if ((DRY)); then  # no sanitizer on the CPU: the step it would watch runs once, alone
    DRY_SAN="skipped: dry run; scripts/gpu_check.py sanitize alone: ok"
    bounded sanitize "$(secs 45)" $PY scripts/gpu_check.py sanitize "${DEV[@]}" "${SANITIZE[@]}" \
        >"$LOG" 2>&1 \
        || { DRY_SAN="FAILED: scripts/gpu_check.py sanitize: $(tail -1 "$LOG")"; FAILED+=(sanitize); }
fi
echo "{" >"$PARTS/sanitizer.json"
SEP=""
for tool in memcheck racecheck initcheck; do
    if ((DRY)); then
        RESULT=$DRY_SAN
    elif [[ -z $SAN ]]; then
        RESULT="skipped: compute-sanitizer not found (install the CUDA toolkit or put it on PATH)"
        FAILED+=("$tool")
    elif PYTORCH_NO_CUDA_MEMORY_CACHING=1 bounded "$tool" "$(secs 45)" "$SAN" --tool "$tool" \
            --error-exitcode 9 --kernel-name kns=_step \
            $PY scripts/gpu_check.py sanitize "${DEV[@]}" "${SANITIZE[@]}" >"$LOG" 2>&1; then
        RESULT="ok: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG" | tail -1)"
    else
        RESULT="FAILED (exit $?): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|Error' "$LOG" | tail -1)"
        grep -B2 -A12 -m3 -E "Invalid|Uninitialized|Race|hazard" "$LOG" | head -60
        FAILED+=("$tool")
    fi
    echo "$tool: $RESULT"
    echo "$SEP\"$tool\": {\"result\": $(json_str "$RESULT")}" >>"$PARTS/sanitizer.json"
    SEP=","
done
echo "}" >>"$PARTS/sanitizer.json"

echo "== 3. bf16 over 4,096 steps against float64 =="
bounded long "$(secs 45)" $PY scripts/gpu_check.py long "${DEV[@]}" "${LONG[@]}" \
    --out "$PARTS/long.json" >"$LOG" 2>&1 || { tail -20 "$LOG"; FAILED+=(long); }

echo "== 4. per-step timings against nn.GRU: ${TIMING[*]} =="
bounded timings "$(secs 120)" $PY scripts/gpu_check.py timings "${DEV[@]}" "${TIMING[@]}" \
    --out "$PARTS/timings.json" || FAILED+=(timings)

echo "== 5. learned rhythm with free phases against nn.GRU: rates 1 0.17 0.05 =="
bounded rhythm "$(secs 45)" $PY scripts/bench_surnn.py "${BENCH[@]}" --gate rhythm \
    --rates 1 0.17 0.05 --out "$OUT_RHYTHM" --label "scripts/gpu_check.sh" >"$LOG" 2>&1 \
    || { tail -20 "$LOG"; FAILED+=(rhythm); }

echo "== 6. summary ($OUT, $OUT_RHYTHM) =="
bounded summary $((20 * SLOW)) $PY scripts/gpu_check.py summary "${DEV[@]}" --out "$OUT" \
    tests="$PARTS/tests.json" sanitizer="$PARTS/sanitizer.json" long="$PARTS/long.json" \
    timings="$PARTS/timings.json" rhythm="$OUT_RHYTHM" || FAILED+=(summary)
rm -rf "$PARTS"
echo "gpu_check.sh: ${SECONDS} s"
if ((!DRY)); then
    echo "to commit (with the device name and this output in the message; copy the two files"
    echo "into results/bench/ first if GPU_CHECK_OUT put them elsewhere):"
    echo "    git add results/bench/$(basename "$OUT") results/bench/$(basename "$OUT_RHYTHM")"
    echo "    the README's GPU paragraphs: the measured per-step times beside the estimate of"
    echo "    results/bench/triton_roofline.md (python scripts/make_tables.py RUNS --gpu $OUT)"
fi
if ((${#FAILED[@]})); then
    echo "gpu_check.sh: FAILED steps: ${FAILED[*]}"
    exit 1
fi
echo "gpu_check.sh: every step passed"
