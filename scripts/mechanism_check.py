#!/usr/bin/env python
"""The mechanism check of every implementation, written down: a closed neuron keeps its state.

    python scripts/mechanism_check.py --out results/memory/mechanism [--span 1000]

Runs ``surnn.hold.closed_span_check`` (the public layer with a frozen hand-set gate open at
the first 10 steps, then closed for ``--span`` steps) for each implementation (reference,
cpu, compiled in fp64 and fp32; triton under TRITON_INTERPRET=1 without a GPU, fp32) and
``torch.nn.GRU`` with the same weights beside it, and writes ``<out>.json`` and ``<out>.md``:
whether the state is held bit for bit, whether every closed step's Jacobian is the identity,
whether the gradient reaches the first input unchanged, and what nn.GRU keeps of that
gradient across the same span. tests/surnn/test_hold.py asserts the same facts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

CASES = [
    ("reference", torch.float64, True),
    ("cpu", torch.float64, True),
    ("compiled", torch.float64, True),
    ("compiled", torch.float32, True),
    ("triton", torch.float32, False),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--span", type=int, default=1000)
    ap.add_argument("--impls", nargs="+", default=None, help="a subset of the implementations")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the Triton kernels load
    from surnn.hold import closed_span_check

    rows = []
    for impl, dtype, whole in CASES:
        if args.impls and impl not in args.impls:
            continue
        r = closed_span_check(impl, span=args.span, hidden=4, batch=2, dtype=dtype, whole=whole)
        r["device"] = "cuda" if impl == "triton" and torch.cuda.is_available() else "cpu"
        if impl == "triton" and r["device"] == "cpu":
            r["device"] = "cpu (TRITON_INTERPRET=1)"
        rows.append(r)
        print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        f"Closed for {args.span} steps after a 10-step window (hidden 4, batch 2): "
        "`python scripts/mechanism_check.py` (surnn.hold.closed_span_check).",
        "",
        "| implementation | dtype | device | state held bit for bit | closed step's Jacobian = I "
        "| gradient reaches x_0 unchanged | ||dL/dx_0|| whole / window | nn.GRU: ||dL/dx_0|| "
        "after 10 / 100 / the span, relative to before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['grad_ratio']:.15g}" if "grad_ratio" in r else "–"
        lines.append(
            f"| {r['impl']} | {r['dtype']} | {r['device']} | {r['state_held']} | "
            f"{r['jacobian_identity']} | {r['grad_equal']} | {ratio} | "
            + " / ".join(f"{v:.3g}" for v in r["gru_grad_ratio_by_span"].values())
            + " |"
        )
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["state_held"] and r["jacobian_identity"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
