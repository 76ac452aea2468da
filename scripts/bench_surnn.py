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

    python scripts/bench_surnn.py                                   # CPU, the issue's sizes
    python scripts/bench_surnn.py --batch 8 --seq 128 --reps 3      # quick
    python scripts/bench_surnn.py --gate rhythm --group-size 64     # learned rhythm, 8 groups
    python scripts/bench_surnn.py --device cuda --dtype bf16 --batch 64 --hidden 1024 --dim 1024
    python scripts/bench_surnn.py --suite targets                   # issue 12's CPU targets

``--suite targets`` times the compiled CPU kernel's targets (learned rhythm with free
per-neuron phases at 17% updates): B=32 T=1024 D=H=512 inference and training against
nn.GRU and against the same layer at rate 1; small layers (H=64/128, B=32, T=221/1000)
training against nn.GRU; streaming B=1 T=784 D=1 H=256 inference against the same kernel
with every gate open and against nn.GRU at B=1. Timing for a noisy VM: in every
repetition each case runs right after its own baseline, and a ratio is baseline min /
case min over the repetitions (noise only ever adds time); the JSON keeps every raw time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from surnn.gates import build_gate
from surnn.ops import resolve_impl, su_gru

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
    p.add_argument("--width", type=float, default=0.1, help="rhythm surrogate width")
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
        help="rates: the update-rate sweep above; targets: issue 12's paired CPU cases",
    )
    p.add_argument(
        "--settings",
        nargs="+",
        default=["big", "small", "stream", "crossover"],
        help="targets: which settings (big, small, stream, crossover)",
    )
    return p.parse_args()


def commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True
        ).strip()
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_args(args: argparse.Namespace) -> str:
    parts = []
    for k, v in vars(args).items():
        if v in (None, False, ""):
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            parts.append(flag)
        elif isinstance(v, list):
            parts.append(
                flag + " " + " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
            )
        else:
            parts.append(f"{flag} {v!r}" if isinstance(v, str) and " " in v else f"{flag} {v}")
    return " ".join(parts)


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
        return targets(args)
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

    rows = []
    for name, c in cases.items():
        med = statistics.median(c["times"])
        rows.append(
            {
                "case": name,
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
        f"\nB={B} T={T} D={D} H={H} {args.dtype} {device} threads={args.threads} impl={impl} gate={args.gate}"
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
        "command": "python scripts/bench_surnn.py " + command_args(args),
        "label": args.label,
        "sizes": {"B": B, "T": T, "D": D, "H": H},
        "dtype": args.dtype,
        "device": device_name(device),
        "threads": args.threads,
        "impl": impl,
        "gate": gate_name(args),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
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


# ------------------------------------------------------------------ issue 12's targets
TARGET_RATE = 0.17


def rhythm_at(rate: float, T: int, H: int, width: float, seed: int = 0):
    """The paper's gate (learned rhythm, free per-neuron phases, 4 frequencies) with its
    bias shifted by one constant so that exactly ``rate`` of the [T, H] updates are open
    (the init's rate is only approximate). Returns (g, active_eval, active_train) where
    training adds the near-threshold neurons of the bounded surrogate (|a| < width)."""
    torch.manual_seed(seed)
    gate = build_gate(H, H, {"kind": "rhythm", "init_rate": rate, "width": width, "n_freqs": 4})
    with torch.no_grad():
        a = gate.preactivation(T)
        shift = torch.quantile(a.flatten().double(), 1 - rate).float()
        a = a - shift
    return (a > 0).float(), a > 0, (a > 0) | (a.abs() < width)


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


def targets(args) -> None:
    impl = resolve_impl(args.impl, torch.device("cpu"), torch.float32)
    width = args.width
    pairs: list[dict] = []

    def pair(setting, name, base, base_fn, case, case_fn, target, extra=None):
        pairs.append(
            {"setting": setting, "name": name, "baseline": base, "case": case,
             "base_fn": base_fn, "case_fn": case_fn, "target": target, **(extra or {})}
        )  # fmt: skip

    def layer(B, T, D, H, seed=0):
        torch.manual_seed(seed)
        gru = torch.nn.GRU(D, H, batch_first=True)
        w = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
        x = torch.randn(B, T, D)
        return gru, w, x, x.clone().requires_grad_(), torch.zeros(B, H)

    def infer(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    def train_step(w, xg, fn):
        def run():
            for p in [*w, xg]:
                p.grad = None
            out = fn()
            out = out[0] if isinstance(out, tuple) else out
            out.sum().backward()

        return run

    info = {}
    if "big" in args.settings:
        B, T, D, H = 32, 1024, 512, 512
        gru, w, x, xg, h0 = layer(B, T, D, H)
        g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, width)
        ones, all_on = torch.ones(T, H), torch.ones(T, H, dtype=torch.bool)
        info["big"] = {"B": B, "T": T, "D": D, "H": H, "rate": float(g.mean()),
                       "train_active_rate": float(a_tr.float().mean())}  # fmt: skip
        su = infer(lambda: su_gru(x, h0, *w, g, a_ev, impl=impl))
        pair("big", "inference vs nn.GRU", "nn.GRU fwd", infer(lambda: gru(x)),
             f"su {impl} fwd", su, 4.0)  # fmt: skip
        pair("big", "inference vs rate 1 (same kernel)", f"su {impl} rate 1 fwd",
             infer(lambda: su_gru(x, h0, *w, ones, all_on, impl=impl)),
             f"su {impl} fwd", su, 4.0)  # fmt: skip
        pair("big", "inference vs rate 1 (eager cpu path)", "su cpu rate 1 fwd",
             infer(lambda: su_gru(x, h0, *w, ones, all_on, impl="cpu")),
             f"su {impl} fwd", su, 4.0)  # fmt: skip
        pair("big", "training step vs nn.GRU", "nn.GRU train", train_step(w, xg, lambda: gru(xg)),
             f"su {impl} train", train_step(w, xg, lambda: su_gru(xg, h0, *w, g, a_tr, impl=impl)),
             2.0)  # fmt: skip
    if "small" in args.settings:
        for H, T in [(64, 221), (64, 1000), (128, 221), (128, 1000)]:
            B, D = 32, H
            gru, w, x, xg, h0 = layer(B, T, D, H)
            g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, width)
            tag = f"small H={H} T={T}"
            info[tag] = {"B": B, "T": T, "D": D, "H": H, "rate": float(g.mean()),
                         "train_active_rate": float(a_tr.float().mean())}  # fmt: skip
            base = train_step(w, xg, lambda gru=gru, xg=xg: gru(xg))
            # the eager path only at the reference point (H=64, T=221): time
            for which in (impl, "cpu") if (H, T) == (64, 221) else (impl,):
                pair(tag, f"training step vs nn.GRU ({which})", "nn.GRU train", base,
                     f"su {which} train",
                     train_step(w, xg, lambda xg=xg, h0=h0, w=w, g=g, a=a_tr, which=which:
                                su_gru(xg, h0, *w, g, a, impl=which)),
                     1.0)  # fmt: skip
    if "stream" in args.settings:
        B, T, D, H = 1, 784, 1, 256
        gru, w, x, xg, h0 = layer(B, T, D, H)
        g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, width)
        ones, all_on = torch.ones(T, H), torch.ones(T, H, dtype=torch.bool)
        info["stream"] = {"B": B, "T": T, "D": D, "H": H, "rate": float(g.mean())}
        su = infer(lambda: su_gru(x, h0, *w, g, a_ev, impl=impl))
        pair("stream", "inference vs every gate open (same kernel)", f"su {impl} rate 1 fwd",
             infer(lambda: su_gru(x, h0, *w, ones, all_on, impl=impl)),
             f"su {impl} fwd", su, 5.3, {"per_step": True})  # fmt: skip
        pair("stream", "inference vs nn.GRU (B=1)", "nn.GRU fwd", infer(lambda: gru(x)),
             f"su {impl} fwd", su, 1.0, {"per_step": True})  # fmt: skip

    if "crossover" in args.settings:  # where auto should stop picking the compiled kernel
        B, T, D, H = 32, 1024, 512, 512
        gru, w, x, xg, h0 = layer(B, T, D, H)
        for rate in (0.3, 0.5, 0.75):
            g, a_ev, a_tr = rhythm_at(rate, T, H, width)
            tag = f"crossover rate {rate:g}"
            info[tag] = {"B": B, "T": T, "D": D, "H": H, "rate": float(g.mean()),
                         "train_active_rate": float(a_tr.float().mean())}  # fmt: skip
            pair(tag, "inference: compiled vs eager cpu", "su cpu fwd",
                 infer(lambda g=g, a=a_ev: su_gru(x, h0, *w, g, a, impl="cpu")),
                 "su compiled fwd",
                 infer(lambda g=g, a=a_ev: su_gru(x, h0, *w, g, a, impl="compiled")),
                 1.0)  # fmt: skip
            pair(tag, "training: compiled vs eager cpu", "su cpu train",
                 train_step(w, xg, lambda g=g, a=a_tr: su_gru(xg, h0, *w, g, a, impl="cpu")),
                 "su compiled train",
                 train_step(w, xg, lambda g=g, a=a_tr: su_gru(xg, h0, *w, g, a, impl="compiled")),
                 1.0)  # fmt: skip

    load_before = os.getloadavg()
    if set(args.settings) == {"stream"}:  # a B=1 sequence takes ~20 ms: more repetitions
        args.reps = max(args.reps, 30)  # so that some run without a preemption
    run_pairs(pairs, args.reps)
    load_after = os.getloadavg()
    rows = []
    print(f"\nthreads={args.threads} impl={impl} rhythm (free phases) at {TARGET_RATE:.0%}")
    print(
        f"{'setting':<20}{'case':<42}{'base min s':>11}{'case min s':>11}{'ratio':>7}{'target':>7}  met"
    )
    for p in pairs:
        bmin, cmin = min(p["base_times"]), min(p["case_times"])
        ratio = bmin / cmin
        T = info[p["setting"]]["T"]
        row = {k: p[k] for k in ("setting", "name", "baseline", "case", "target")}
        row.update(
            base_min_s=bmin, case_min_s=cmin, ratio_of_min=ratio, met=ratio >= p["target"],
            base_times_s=p["base_times"], case_times_s=p["case_times"],
            sizes=info[p["setting"]],
        )  # fmt: skip
        if p.get("per_step"):
            row["case_us_per_step"] = cmin / T * 1e6
            row["base_us_per_step"] = bmin / T * 1e6
        rows.append(row)
        print(f"{p['setting']:<20}{p['name']:<42}{bmin:>11.4f}{cmin:>11.4f}{ratio:>7.2f}"
              f"{p['target']:>7.1f}  {'yes' if row['met'] else 'NO'}")  # fmt: skip
        if p.get("per_step"):
            print(f"{'':<20}  per step: {row['case_us_per_step']:.1f} us (case), "
                  f"{row['base_us_per_step']:.1f} us (baseline)")  # fmt: skip
    meta = {
        "command": "python scripts/bench_surnn.py " + command_args(args),
        "label": args.label,
        "method": "per repetition each case runs right after its baseline; ratio = min(baseline) / min(case)",
        "gate": f"rhythm, free per-neuron phases, 4 frequencies, bias shifted to {TARGET_RATE} open; training active = open or |a| < {width}",
        "device": device_name(torch.device("cpu")),
        "threads": args.threads,
        "impl": impl,
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "reps": args.reps,
        "loadavg_before_after": [load_before, load_after],
        "settings": info,
        "rows": rows,
    }
    out = Path(args.out) if args.out else ROOT / "results" / "bench" / "surnn_cpu_targets.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
