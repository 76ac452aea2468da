#!/usr/bin/env python
"""Write a hand-set rhythm gate: the upper bound of the mechanism on copy memory.

    python scripts/handset_gate.py --delay 1000 --out configs/gates/copy_memory_handset_d1000.json

A gate told where copy memory's symbols sit, which no learned gate is: the first
``--holders`` neurons ride one sinusoid of period 4T (T = 2 n_copy + delay, the sequence
length) and are open at steps 0 .. n_copy - 1 only (the symbols), closed through the delay and
the recall; the other neurons are open at every step (they compute the recall). Used frozen
(``model.options.gate.params=<file> model.options.gate.frozen=true``, n_freqs 1): it shows what
the paper's formula can do when the gate holds, not what training finds. The values come from
``surnn.hold.window_params`` (the pre-activation crosses 0 with slope 0.01 per step).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from surnn.hold import window_params


def handset(hidden: int, holders: int, n_copy: int, delay: int) -> dict[str, list]:
    T = 2 * n_copy + delay
    p = window_params(hidden, period=4.0 * T, start=0, length=n_copy)
    open_rows = torch.arange(hidden) >= holders
    p["alpha"][open_rows] = 0.0
    p["bias"][open_rows] = 1.0  # a constant positive pre-activation: open at every step
    return {k: v.tolist() for k, v in p.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay", type=int, required=True)
    ap.add_argument("--n-copy", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--holders", type=int, default=None, help="default: half the neurons")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    holders = args.hidden // 2 if args.holders is None else args.holders
    if not 0 <= holders <= args.hidden:
        print(f"error: --holders {holders}: expected 0 .. --hidden {args.hidden}", file=sys.stderr)
        return 2
    gate = handset(args.hidden, holders, args.n_copy, args.delay)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(gate) + "\n")
    print(f"wrote {args.out} ({holders} of {args.hidden} neurons hold steps 0..{args.n_copy - 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
