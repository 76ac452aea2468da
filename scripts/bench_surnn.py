"""Benchmark the selective-update GRU against torch.nn.GRU of the same size.

One process, same sizes and dtype, interleaved repetitions: times are medians, speedups
the median of the per-repetition ratios (paired, robust to a machine whose speed drifts).
For each update rate
the gate is a staggered interval schedule (``--gate interval``: period round(1/rate),
one contiguous slab of neurons per step) or a rhythm gate initialised at that rate
(``--gate rhythm``; training then also computes the near-threshold neurons of the bounded
surrogate; ``--group-size G``: groups of G neurons share one rhythm). "su rate 0 fwd" has
every neuron closed: its time per step is the floor that skipping updates cannot go
below (printed, and ``empty_step_us`` in the JSON). Prints a table and writes JSON under
results/bench/.

    python scripts/bench_surnn.py                                   # CPU, B=32 T=1024 D=H=512
    python scripts/bench_surnn.py --batch 8 --seq 128 --reps 3      # quick
    python scripts/bench_surnn.py --gate rhythm --group-size 64     # learned rhythm, 8 groups
    python scripts/bench_surnn.py --device cuda --dtype bf16 --batch 64 --hidden 1024 --dim 1024
    python scripts/bench_surnn.py --suite targets                   # the CPU targets

``--suite targets`` times the compiled CPU kernel's targets (learned rhythm with free
per-neuron phases at 17% updates): B=32 T=1024 D=H=512 inference and training against
nn.GRU and against the same layer at rate 1; small layers (H=64/128, B=32, T=221/1000)
training against nn.GRU; padded batches as LRA's (B=32, lengths T/8..T, H=64 T=221 and
H=128 T=1000) inference and training against nn.GRU over the padded batch and on the
packed batch; streaming B=1 T=784 D=1 H=256 (the paper's sMNIST shape): inference through
the public layer (``SelectiveUpdateGRU``, eval) against the same layer with every gate open
(``all_open()``) and against nn.GRU at B=1, the op alone against itself with every gate
open, and the layer's per-call overhead (its time minus the op's, same gate, in
microseconds); a training step through the public layer with the presets' gate under
each surrogate (``--settings surrogate``: straight-through, the triangle of half-width 1,
0.3, 0.1) at B=32 T=1024 D=H=512, at the sMNIST presets' layer (B=50 T=784 H=256) and at
the demo ListOps' (B=64 H=64, lengths 20..150) against nn.GRU's. Every training row names
its surrogate (the op's rows: the triangle of half-width ``--width``). Timing for a noisy VM: in every repetition each case
runs right after its own baseline, and a ratio is baseline min / case min over the
repetitions (noise only ever adds time); the JSON keeps every raw time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from surnn.gates import build_gate
from surnn.ops import resolve_impl, su_gru
from surnn.ops.bench import targets
from surnn.ops.bench_settings import SETTINGS, surrogate_name
from surnn.provenance import command_line, device_name, git_commit, now_iso

ROOT = Path(__file__).resolve().parents[1]
RATES = (1.0, 0.5, 0.25, 0.17, 0.1, 0.05)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--dim", type=int, default=512, help="input size D")
    p.add_argument("--hidden", type=int, default=512, help="hidden size H")
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    p.add_argument("--gate", choices=("interval", "rhythm"), default="interval")
    p.add_argument(
        "--width",
        type=float,
        default=0.1,
        help="half-width of the triangle surrogate of the op's training rows (rhythm gate)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=1,
        help="rhythm: neurons per shared rhythm (1 = per neuron, the paper)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--impl", default="auto")
    p.add_argument("--no-train", action="store_true", help="forward only")
    p.add_argument("--out", default=None, help="JSON path (default results/bench/<name>.json)")
    p.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'noisy')")
    p.add_argument(
        "--suite",
        choices=("rates", "targets"),
        default="rates",
        help="rates: the update-rate sweep above; targets: the paired CPU cases",
    )
    p.add_argument(
        "--settings",
        nargs="+",
        choices=tuple(SETTINGS),
        default=list(SETTINGS),
        help="targets: which settings",
    )
    return p.parse_args()


def make_gate(args, rate: float, H: int, device, dtype):
    """(g, active_train, active_eval) for one update rate."""
    if args.gate == "interval":
        period = max(1, round(1 / rate))
        g, act = build_gate(H, H, {"kind": "interval", "period": period})(args.seq, device=device)
        return g.to(dtype), act, act
    torch.manual_seed(0)
    gate = build_gate(
        H,
        H,
        {
            "kind": "rhythm",
            "init_rate": rate,
            "width": args.width,
            "n_freqs": 4,
            "group_size": args.group_size,
        },
    ).to(device)
    g, act_train = gate(args.seq, device=device)
    with torch.no_grad():
        _, act_eval = gate(args.seq, device=device)
    return g.detach().to(dtype), act_train, act_eval


def gate_name(args) -> str:
    if args.gate == "rhythm" and args.group_size > 1:
        return f"rhythm-g{args.group_size}"
    return args.gate


def timer(device: torch.device):
    def run(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return run


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    if args.suite == "targets":
        return targets(args, ROOT)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    B, T, D, H = args.batch, args.seq, args.dim, args.hidden
    impl = resolve_impl(args.impl, device)
    torch.manual_seed(0)
    gru = torch.nn.GRU(D, H, batch_first=True).to(device, dtype)
    w = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    x = torch.randn(B, T, D, device=device, dtype=dtype)
    xg = x.clone().requires_grad_()
    h0 = torch.zeros(B, H, device=device, dtype=dtype)
    gates = {r: make_gate(args, r, H, device, dtype) for r in args.rates}

    def zero():
        for p in [*w, xg]:
            p.grad = None

    cases: dict[str, dict] = {}

    def add(name, kind, fn, flops, rate):
        cases[name] = {"kind": kind, "fn": fn, "flops": flops, "rate": rate, "times": []}

    dense = 2 * 3 * (D + H) * B * T * H
    add("nn.GRU fwd", "fwd", lambda: gru(x), dense, 1.0)
    if not args.no_train:
        add(
            "nn.GRU train",
            "train",
            lambda: (zero(), gru(xg)[0].float().sum().backward()),
            3 * dense,
            1.0,
        )
    for r, (g, act_tr, act_ev) in gates.items():
        ex_ev = 2 * 3 * (D + H) * B * int(act_ev.sum())
        ex_tr = 3 * 2 * 3 * (D + H) * B * int(act_tr.sum())
        real = float(g.float().mean())

        def fwd(g=g, a=act_ev):
            with torch.no_grad():
                su_gru(x, h0, *w, g, a, impl=impl)

        def train(g=g, a=act_tr):
            zero()
            out, _ = su_gru(xg, h0, *w, g, a, impl=impl)
            out.float().sum().backward()

        add(f"su rate {r:g} fwd", "fwd", fwd, ex_ev, real)
        if not args.no_train:
            add(f"su rate {r:g} train", "train", train, ex_tr, real)

    # The floor: every neuron closed, so each step only carries the state. Sparse updates
    # save FLOPs and bytes, not this per-step cost: the speedup saturates near it.
    g0 = torch.zeros(T, H, device=device, dtype=dtype)
    a0 = torch.zeros(T, H, device=device, dtype=torch.bool)

    def floor(g=g0, a=a0):
        with torch.no_grad():
            su_gru(x, h0, *w, g, a, impl=impl)

    add("su rate 0 fwd", "fwd", floor, 0, 0.0)

    run = timer(device)
    for c in cases.values():  # warm-up (compiles kernels, allocates)
        run(c["fn"])
    for rep in range(args.reps):
        for c in cases.values():
            c["times"].append(run(c["fn"]))
        print(f"rep {rep + 1}/{args.reps} done", flush=True)

    # Speedups are paired: the median over repetitions of (baseline / case) within the same
    # repetition. The cases of one repetition run back to back, so a slow spell of a shared
    # machine (this VM's speed drifts by up to 2x over minutes) cancels in each ratio.
    ref = {k: cases[f"nn.GRU {k}"]["times"] for k in ("fwd", "train") if f"nn.GRU {k}" in cases}
    rate1 = {c["kind"]: c["times"] for n, c in cases.items() if n.startswith("su rate 1 ")}

    def paired(base, times) -> float:
        if base is None:
            return math.nan
        return statistics.median(b / t for b, t in zip(base, times))

    # What a training row computes: the rhythm's open neurons and the closed ones within
    # the triangle's half-width; an interval schedule has no surrogate (a fixed gate).
    surrogate = surrogate_name("triangle", args.width) if args.gate == "rhythm" else None
    rows = []
    for name, c in cases.items():
        med = statistics.median(c["times"])
        rows.append(
            {
                "case": name,
                "surrogate": surrogate if c["kind"] == "train" and name.startswith("su ") else None,
                "kind": c["kind"],
                "update_rate": round(c["rate"], 4),
                "median_s": med,
                "min_s": min(c["times"]),
                "times_s": c["times"],
                "executed_gflop": c["flops"] / 1e9,
                "gflop_per_s": c["flops"] / 1e9 / med,
                "speedup_vs_nn_gru": paired(ref.get(c["kind"]), c["times"]),
                "speedup_vs_rate1": paired(rate1.get(c["kind"]), c["times"]),
            }
        )
    print(
        f"\nB={B} T={T} D={D} H={H} {args.dtype} {device} threads={args.threads} impl={impl} "
        f"gate={args.gate} surrogate (training rows)={surrogate or 'none'}"
    )
    print(f"{'case':<22}{'rate':>7}{'median ms':>11}{'GFLOP/s':>9}{'vs GRU':>8}{'vs rate1':>9}")
    for r in rows:
        print(
            f"{r['case']:<22}{r['update_rate']:>7.3f}{r['median_s'] * 1e3:>11.1f}"
            f"{r['gflop_per_s']:>9.1f}{r['speedup_vs_nn_gru']:>8.2f}{r['speedup_vs_rate1']:>9.2f}"
        )
    empty = statistics.median(cases["su rate 0 fwd"]["times"])
    print(
        f"floor: a step with every neuron closed takes {empty / T * 1e6:.1f} us "
        f"({empty * 1e3:.1f} ms for T={T}); the sparse forward cannot beat it"
    )
    meta = {
        "command": command_line(),
        "label": args.label,
        "sizes": {"B": B, "T": T, "D": D, "H": H},
        "dtype": args.dtype,
        "device": device_name(device),
        "threads": args.threads,
        "impl": impl,
        "gate": gate_name(args),
        "surrogate": surrogate or "none (a fixed schedule: training computes the open updates)",
        "torch": torch.__version__,
        "date": now_iso(),
        "commit": git_commit(ROOT, short=True),
        "reps": args.reps,
        "empty_step_us": empty / T * 1e6,
        "rows": rows,
    }
    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "results"
        / "bench"
        / (f"surnn_{device.type}_{args.dtype}_B{B}_T{T}_D{D}_H{H}_{gate_name(args)}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
