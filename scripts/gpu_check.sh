#!/usr/bin/env bash
# GPU check of the suRNN Triton kernels (what TRITON_INTERPRET=1 cannot show: races, bf16,
# speed). Run on a machine with one CUDA GPU:   bash scripts/gpu_check.sh   (or make gpu-check)
#   1. the kernel tests on CUDA: fp32 against the reference, bf16 against the fp32 reference,
#      FLOP formula, torch.library.opcheck;
#   2. the benchmark against cuDNN nn.GRU: bf16, B=64, T=1024, D=H=1024;
#   3. a short table (printed last). Budget: under 8 minutes after `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup >/dev/null
PY=.venv/bin/python
unset TRITON_INTERPRET
$PY - <<'PY'
import torch, triton
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False)"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__)
PY
OUT=results/bench/surnn_gpu_check.json
echo "== kernel tests on CUDA (fp32, bf16) =="
timeout 240 $PY -m pytest tests/test_surnn_triton.py -q -x -p no:cacheprovider
echo "== benchmark vs cuDNN nn.GRU (bf16, B=64, T=1024, D=H=1024) =="
timeout 300 $PY scripts/bench_surnn.py --device cuda --dtype bf16 --batch 64 --seq 1024 \
    --dim 1024 --hidden 1024 --reps 5 --out "$OUT" --label "scripts/gpu_check.sh" >/tmp/surnn_gpu_bench.log \
    || { tail -40 /tmp/surnn_gpu_bench.log; exit 1; }
echo "== summary ($OUT) =="
$PY - "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['device']}  {r['dtype']}  B={r['sizes']['B']} T={r['sizes']['T']} H={r['sizes']['H']}  commit {r['commit']}")
print(f"{'case':<22}{'rate':>7}{'median ms':>11}{'vs cuDNN':>10}{'vs rate1':>9}")
for row in r["rows"]:
    print(f"{row['case']:<22}{row['update_rate']:>7.3f}{row['median_s'] * 1e3:>11.2f}"
          f"{row['speedup_vs_nn_gru']:>10.2f}{row['speedup_vs_rate1']:>9.2f}")
PY
