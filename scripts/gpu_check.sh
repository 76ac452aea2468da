#!/usr/bin/env bash
# GPU check of the suRNN Triton kernels (what TRITON_INTERPRET=1 cannot show: races, bf16,
# speed). Run on a machine with one CUDA GPU:   bash scripts/gpu_check.sh   (or make gpu-check)
#   1. the kernel tests on CUDA: fp32 against the reference, bf16 against the fp32 reference,
#      FLOP formula, torch.library.opcheck;
#   2. the benchmark against cuDNN nn.GRU: bf16, B=64, T=1024, D=H=1024, with the staggered
#      interval schedule, then the learned rhythm with free phases (scattered active neurons,
#      packed into tiles per step) and in groups of 64 neurons (16 rhythms);
#   3. the step loops launched eagerly vs replayed as CUDA graphs (surnn/ops/triton/graphs.py):
#      bf16, B=64, T=4096, D=H=256 (launch-bound), forward and a training step;
#   4. short tables (printed last). Budget: under 8 minutes (step timeouts sum to 7.5).
# The CUDA-graph path and its tests (tests/surnn/test_triton_graphs.py) have not run on a GPU yet.
# Python: the project's .venv when its torch sees a GPU; else a python3 whose torch sees one
# (GPU images without network access: the kernels and the benchmark need only torch, triton,
# numpy, tqdm and pytest, not Hydra); else `make setup` (needs the package registries).
#   bash scripts/gpu_check.sh --dry-run   runs the same steps on the CPU (Triton interpreter,
#                                         tiny sizes) to check the script itself; CI does this.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

cuda_ok() { "$1" -c "import torch, triton; assert torch.cuda.is_available()" >/dev/null 2>&1; }
if ((DRY)); then
    PY=.venv/bin/python
    [[ -x $PY ]] || { make setup >/dev/null; }
elif [[ -x .venv/bin/python ]] && cuda_ok .venv/bin/python; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null && cuda_ok python3; then
    PY=python3
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    make setup >/dev/null
    PY=.venv/bin/python
fi
$PY - "$DRY" <<'PY'
import importlib.util, sys
missing = [m for m in ("torch", "triton", "numpy", "tqdm", "pytest") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check.sh: {sys.executable} lacks {', '.join(missing)}: run `make setup` "
             "(or carry their wheels to a machine without network)")
import torch, triton
if sys.argv[1] == "0" and not torch.cuda.is_available():
    sys.exit("gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False); "
             "--dry-run checks the script on the CPU")
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (dry run)"
print("device:", dev, "| python", sys.executable, "| torch", torch.__version__,
      "| triton", triton.__version__)
PY

if ((DRY)); then
    export TRITON_INTERPRET=1
    OUT=${GPU_CHECK_OUT:-/tmp/surnn_gpu_check_dry.json}
    BENCH=(--device cpu --dtype fp32 --batch 2 --seq 16 --dim 16 --hidden 16 --reps 1 --rates 1 0.17
           --impl triton)
    GRAPHS=(--device cpu --dtype fp32 --batch 2 --seq 4 --dim 8 --hidden 16 --reps 1)
    # the graph tests' CPU part runs in the normal suite; here one of them checks the step
    TESTS=(tests/surnn/test_triton.py tests/surnn/test_triton_graphs.py::test_option_and_environment)
    GROUP=8
    SLOW=4  # the interpreter on a busy CPU: the 8-minute budget is the GPU run's
else
    unset TRITON_INTERPRET
    OUT=${GPU_CHECK_OUT:-results/bench/surnn_gpu_check.json}
    BENCH=(--device cuda --dtype bf16 --batch 64 --seq 1024 --dim 1024 --hidden 1024 --reps 5
           --impl triton)
    GRAPHS=(--device cuda --dtype bf16 --batch 64 --seq 4096 --dim 256 --hidden 256 --reps 5)
    TESTS=(tests/surnn/test_triton.py tests/surnn/test_triton_graphs.py)
    GROUP=64
    SLOW=1
fi
OUT_FREE=${OUT%.json}_rhythm.json
OUT_RHYTHM=${OUT%.json}_rhythm-g$GROUP.json
OUT_GRAPHS=${OUT%.json}_graphs.json
LOG=$(mktemp)
echo "== kernel tests (fp32; bf16 on CUDA); CUDA graphs vs eager, bit for bit =="
timeout $((165 * SLOW)) $PY -m pytest "${TESTS[@]}" -q -x -p no:cacheprovider
echo "== benchmark vs nn.GRU (cuDNN on CUDA): ${BENCH[*]} =="
timeout $((120 * SLOW)) $PY scripts/bench_surnn.py "${BENCH[@]}" --out "$OUT" --label "scripts/gpu_check.sh" \
    >"$LOG" 2>&1 || { tail -40 "$LOG"; exit 1; }
echo "== benchmark, learned rhythm with free phases: rates 1 0.17 0.05 =="
timeout $((60 * SLOW)) $PY scripts/bench_surnn.py "${BENCH[@]}" --gate rhythm --rates 1 0.17 0.05 \
    --out "$OUT_FREE" --label "scripts/gpu_check.sh" >"$LOG" 2>&1 || { tail -40 "$LOG"; exit 1; }
echo "== benchmark, learned rhythm in groups of $GROUP: rates 1 0.17 0.05 =="
timeout $((60 * SLOW)) $PY scripts/bench_surnn.py "${BENCH[@]}" --gate rhythm --group-size "$GROUP" \
    --rates 1 0.17 0.05 --out "$OUT_RHYTHM" --label "scripts/gpu_check.sh" \
    >"$LOG" 2>&1 || { tail -40 "$LOG"; exit 1; }
echo "== step loops: eager launches vs CUDA graphs: ${GRAPHS[*]} =="
timeout $((45 * SLOW)) $PY scripts/bench_graphs.py "${GRAPHS[@]}" --out "$OUT_GRAPHS" \
    --label "scripts/gpu_check.sh" >"$LOG" 2>&1 || { tail -40 "$LOG"; exit 1; }
echo "== summary ($OUT, $OUT_FREE, $OUT_RHYTHM, $OUT_GRAPHS) =="
$PY - "$OUT" "$OUT_FREE" "$OUT_RHYTHM" <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    print(f"{r['device']}  {r['dtype']}  B={r['sizes']['B']} T={r['sizes']['T']} H={r['sizes']['H']}"
          f"  gate {r['gate']}  commit {r['commit']}")
    print(f"{'case':<22}{'rate':>7}{'median ms':>11}{'vs nn.GRU':>10}{'vs rate1':>9}")
    for row in r["rows"]:
        print(f"{row['case']:<22}{row['update_rate']:>7.3f}{row['median_s'] * 1e3:>11.2f}"
              f"{row['speedup_vs_nn_gru']:>10.2f}{row['speedup_vs_rate1']:>9.2f}")
PY
$PY - "$OUT_GRAPHS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["sizes"]
print(f"{r['device']}  {r['dtype']}  B={s['B']} T={s['T']} D={s['D']} H={s['H']}  rate {r['rate']}"
      f"  CUDA graphs used: {r['graphs_used']}")
print(f"{'loop':<22}{'launches':>9}{'eager ms':>10}{'graph ms':>10}{'speedup':>9}{'eager us/launch':>17}")
for row in r["rows"]:
    print(f"{'graphs ' + row['case']:<22}{row['launches']:>9}{row['eager_ms']:>10.2f}"
          f"{row['graph_ms']:>10.2f}{row['speedup']:>9.2f}{row['eager_us_per_launch']:>17.2f}")
for k in r["eager_keys"]:
    print("  ran eagerly:", k)
PY
