"""Compile every Triton kernel of the suRNN layer ahead of time for sm_80 and sm_90 (fp32
and bf16, every dispatcher configuration; no GPU needed) and write the table of
registers, spills and shared memory: results/bench/triton_kernels.md (+ .json).

    python scripts/triton_report.py [--out results/bench/triton_kernels] [--jobs N] [--fresh-cache]

Exit status 1 when a kernel does not compile (its error is printed). See
surnn/ops/triton/aot.py for what is compiled and how, aot_report.py for the table (same as
python -m surnn.ops.triton.aot_report).
"""

from __future__ import annotations

import sys

from surnn.ops.triton.aot_report import main

if __name__ == "__main__":
    sys.exit(main())
