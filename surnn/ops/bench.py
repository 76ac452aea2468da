"""Timing for scripts/bench_surnn.py: its ``--suite targets``: the compiled CPU kernel's speed
targets, and streaming through the public layer.

Each target is a pair: a case and its baseline, run back to back in every repetition
after one warm-up; a ratio is min(baseline) / min(case) over the repetitions (noise only
ever adds time) and the JSON keeps every raw time and the load average. Like
``surnn.ops.triton.aot`` for scripts/triton_report.py, it needs nothing but torch and the
method (the op, its gates and layer); ``import surnn`` does not load it. bench_settings.py
makes the pairs (what each setting times); this module times them and writes the JSON;
bench_report.py turns their times into the printed table, the JSON's rows and the Markdown
beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from surnn.ops import resolve_impl
from surnn.ops.bench_report import print_header, surrogate_rows, table, targets_md
from surnn.ops.bench_settings import SETTINGS, TARGET_RATE, Pairs
from surnn.provenance import command_line, device_name, git_commit, now_iso


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_pairs(pairs: list[dict], reps: int) -> None:
    """Each pair: baseline then case, back to back, every repetition (after one warm-up)."""
    for p in pairs:
        _time(p["base_fn"]), _time(p["case_fn"])
        p["base_times"], p["case_times"] = [], []
    for rep in range(reps):
        for p in pairs:
            p["base_times"].append(_time(p["base_fn"]))
            p["case_times"].append(_time(p["case_fn"]))
        print(f"rep {rep + 1}/{reps} done", flush=True)


def targets(args: argparse.Namespace, root: Path) -> None:
    """Time the ``--suite targets`` cases of scripts/bench_surnn.py (``args``: its
    options), print the table and write the JSON (default under ``root``/results/bench)."""
    impl = resolve_impl(args.impl, torch.device("cpu"), torch.float32)
    width = args.width
    p = Pairs(impl, width)
    for name, setting in SETTINGS.items():
        if name in args.settings:
            setting(p)
    load_before = os.getloadavg()
    if set(args.settings) == {"stream"}:  # a B=1 sequence takes ~20 ms: more repetitions
        args.reps = max(args.reps, 30)  # so that some run without a preemption
    run_pairs(p.pairs, args.reps)
    load_after = os.getloadavg()
    print_header(args.threads, impl, TARGET_RATE)
    rows = table(p.pairs, p.info)
    surrogate_rows(rows)  # each surrogate row's vs_ste, before the JSON is written
    meta = {
        "command": command_line(),
        "label": args.label,
        "method": "per repetition each case runs right after its baseline; ratio = min(baseline) / min(case)",
        "gate": f"rhythm, free per-neuron phases, 4 frequencies, bias shifted to {TARGET_RATE} open; training rows of the op: the triangle surrogate of half-width {width:g} (computed in training: open or |a| < {width:g}); the surrogate setting: the layer with the presets' gate under each surrogate it names",
        "device": device_name("cpu"),
        "threads": args.threads,
        "impl": impl,
        "torch": torch.__version__,
        "date": now_iso(),
        "commit": git_commit(root, short=True),
        "reps": args.reps,
        "loadavg_before_after": [load_before, load_after],
        "settings": p.info,
        "rows": rows,
    }
    out = Path(args.out) if args.out else root / "results" / "bench" / "surnn_cpu_targets.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta, indent=1))
    out.with_suffix(".md").write_text(targets_md(meta))
    print(f"wrote {out} and {out.with_suffix('.md').name}")
