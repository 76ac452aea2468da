"""The Python steps of scripts/gpu_check.sh (the Triton kernels checked on a GPU).

    python scripts/gpu_check.py sanitize [--device cuda]     # tiny odd shapes, every code path
    python scripts/gpu_check.py long --out long.json         # bf16, T=4096, against float64
    python scripts/gpu_check.py timings --out timings.json   # per-step event timings
    python scripts/gpu_check.py summary --out results/bench/surnn_gpu_check.json PART.json ...

``sanitize`` runs the op forward and backward on small shapes that are multiples of nothing
(time-only and per-sample gates, ragged lengths, split-K in both directions, CUDA graphs on
and off), for compute-sanitizer's memcheck, racecheck and initcheck to watch.
``long`` compares a bf16 run of T=4,096 steps (values and gradients) with float64 on the same
(bf16) inputs, and with numerics.emulate (the op's rounding in torch), against
numerics.LONG_TOL. ``timings`` times, with CUDA events, the op's phases per step (the step
kernels, the forward's input-projection GEMM, the backward's recompute GEMMs and gradient GEMMs
apart) at update rates 1 and 0.17 (staggered slab schedule), forward and training, with CUDA
graphs and split-K on and off, and nn.GRU (cuDNN) at the same sizes, next to the launch
model's estimate (launch.step_cost); and training at 0.17 with every other step closed
("closed/2"), the backward's gradient GEMMs over the open steps only and dense
(launch.COMPACT_MIN_CLOSED). ``summary`` merges the parts into one JSON (kind "gpu_check",
read by scripts/make_tables.py --gpu) and prints the tables.

On the CPU (gpu_check.sh --dry-run) the same steps run with the Triton interpreter at tiny
sizes and wall-clock timings: they check this script, not the kernels' speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from surnn.ops import su_gru
from surnn.ops.triton import graphs, launch, loops, numerics, op
from surnn.provenance import device_name, git_commit

KIND = "gpu_check"
ROOT = Path(__file__).resolve().parents[1]


def _dev(a) -> torch.device:
    return torch.device(a.device)


def _case(B, T, D, H, dtype, dev, per_sample=False, rate=0.35, seed=0, w_scale=None):
    """Inputs (leaves with requires_grad), gate, active superset, ragged lengths."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*s, scale=0.4):
        return (torch.randn(*s, generator=gen) * scale).to(dev, dtype).requires_grad_()

    x, h0 = rnd(B, T, D, scale=1.0), rnd(B, H, scale=1.0)
    w = [rnd(3 * H, D), rnd(3 * H, H, scale=w_scale or 0.4), rnd(3 * H), rnd(3 * H)]
    u = torch.rand((B, T, H) if per_sample else (T, H), generator=gen)
    g = (u < rate).to(dev, dtype).requires_grad_()
    active = (u < rate + 0.2).to(dev)
    lens = torch.randint(1, T + 1, (B,), generator=gen)
    lens[0] = T
    return x, h0, w, g, active, lens.to(dev)


def _grads(fn, case, wout, gh):
    x, h0, w, g, active, lens = case
    out, h = fn(x, h0, *w, g, active, lens)
    loss = (out.float() * wout.float()).sum() + (h.float() * gh.float()).sum()
    return [out.detach(), h.detach(), *torch.autograd.grad(loss, [x, h0, *w, g])]


# -- sanitize ------------------------------------------------------------------------------
def sanitize(a) -> dict:
    """Every code path on tiny odd shapes (the sanitizers slow kernels by 10-100x)."""
    dev = _dev(a)
    launch.SPLIT_MIN_BYTES, loops.N_SM = 0, 1000  # split-K wherever a step has the K blocks
    runs = []
    B, T, D, H = a.batch, a.seq, a.dim, a.hidden
    cuda = dev.type == "cuda"
    for dtype in (torch.float32, torch.bfloat16) if cuda else (torch.float32,):
        # a sparse time-only gate; every neuron open with a per-sample gate (the backward's
        # reduction then spans all of H: split-K in both directions)
        for per_sample, rate in ((False, 0.35), (True, 1.0)):
            # graphs: eager; first use; capture and replay (the CPU has no graphs: once)
            for flag in (False, True, True) if cuda else (False,):
                case = _case(B, T, D, H, dtype, dev, per_sample, rate=rate, seed=len(runs))
                wout = torch.randn(B, T, H, device=dev)
                res = _grads(
                    lambda *c, flag=flag: op.su_gru_triton(*c, graphs=flag),
                    case,
                    wout,
                    torch.ones(B, H, device=dev),
                )
                finite = all(bool(torch.isfinite(t.float()).all()) for t in res)
                runs.append(
                    dict(dtype=str(dtype), per_sample=per_sample, graphs=flag, finite=finite)
                )
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out = dict(runs=runs, ok=all(r["finite"] for r in runs), graph_stats=dict(graphs.CACHE.stats))
    print(json.dumps(out))
    return out


# -- long ----------------------------------------------------------------------------------
def long_run(a) -> dict:
    """bf16 at T=a.seq against float64 (and the emulation), values and gradients."""
    dev = _dev(a)
    B, T, D, H = a.batch, a.seq, a.dim, a.hidden
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32  # the interpreter: fp32
    w_scale = 1.5 / H**0.5  # a contracting recurrence, as trained layers have
    case = _case(B, T, D, H, dt, dev, rate=0.17, seed=1, w_scale=w_scale)
    gen = torch.Generator().manual_seed(2)
    wout = (torch.randn(B, T, H, generator=gen) / T**0.5).to(dev, dt)
    gh = torch.randn(B, H, generator=gen).to(dev, dt)
    t0 = time.perf_counter()
    got = _grads(lambda *c: su_gru(*c, impl="triton"), case, wout, gh)
    t_op = time.perf_counter() - t0
    x, h0, w, g, active, lens = case
    f64 = [t.detach().double().requires_grad_() for t in (x, h0, *w, g)]
    ref = _grads(
        lambda *c: su_gru(*c, impl="reference"),
        (f64[0], f64[1], f64[2:6], f64[6], active, lens),
        wout,
        gh,
    )
    c = [t.detach().cpu() for t in (x, h0, *w, g)]
    e_out, e_h, e_grads = numerics.emulate(
        c[0], c[1], *c[2:6], c[6], active.cpu(), lens.cpu(), grad_out=wout.cpu(), grad_h=gh.cpu()
    )
    emu = [e_out, e_h, *e_grads]
    got_c, ref_c = [t.cpu() for t in got], [t.detach().cpu() for t in ref]
    names = ["out", "h_T", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dg"]
    vs_ref = {n: numerics.max_error([p], [q]) for n, p, q in zip(names, got_c, ref_c)}
    vs_emu = {n: numerics.max_error([p], [q]) for n, p, q in zip(names, got_c, emu)}
    emu_ref = {n: numerics.max_error([p], [q]) for n, p, q in zip(names, emu, ref_c)}
    tol = numerics.LONG_TOL
    ok = (
        max(vs_ref["out"], vs_ref["h_T"]) < tol["out"]
        and max(v for k, v in vs_ref.items() if k not in ("out", "h_T")) < tol["grads"]
    )
    out = dict(
        sizes=dict(B=B, T=T, D=D, H=H),
        dtype=str(dt),
        op_s=round(t_op, 3),
        error_vs_float64=vs_ref,
        error_vs_emulation=vs_emu,
        emulation_vs_float64=emu_ref,
        tolerance=tol,
        ok=ok,
    )
    print(json.dumps(out))
    return out


# -- timings -------------------------------------------------------------------------------
class Timer:
    """loops.TIMER: sums each phase over a call (CUDA events on the GPU, wall clock on CPU)."""

    def __init__(self, cuda: bool):
        self.cuda, self.spans = cuda, defaultdict(list)

    @contextlib.contextmanager
    def span(self, name):
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            yield
            b.record()
            self.spans[name].append((a, b))
        else:
            t0 = time.perf_counter()
            yield
            self.spans[name].append(time.perf_counter() - t0)

    def totals_ms(self) -> dict:
        if self.cuda:
            torch.cuda.synchronize()
            return {n: sum(a.elapsed_time(b) for a, b in v) for n, v in self.spans.items()}
        return {n: 1e3 * sum(v) for n, v in self.spans.items()}


def _timed(fn, cuda: bool) -> tuple[float, dict]:
    """(ms of one call, ms per phase) with loops.TIMER set."""
    timer = Timer(cuda)
    loops.TIMER = timer
    try:
        if cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            total = a.elapsed_time(b)
        else:
            t0 = time.perf_counter()
            fn()
            total = 1e3 * (time.perf_counter() - t0)
    finally:
        loops.TIMER = None
    return total, timer.totals_ms()


def _slab(T, H, rate, dev, dtype):
    period = max(1, round(1 / rate))
    off = torch.arange(H) * period // H  # one contiguous slab of neurons per step
    return ((torch.arange(T)[:, None] + off[None]) % period == 0).to(dev, dtype)


def timings(a) -> dict:
    dev = _dev(a)
    cuda = dev.type == "cuda"
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    B, T, D, H = a.batch, a.seq, a.dim, a.hidden
    gen = torch.Generator().manual_seed(0)

    def rnd(*s):
        return (torch.randn(*s, generator=gen) * 0.3).to(dev, dt)

    x, h0 = rnd(B, T, D), rnd(B, H)
    w = [rnd(3 * H, D), rnd(3 * H, H) / H**0.5 * 3, rnd(3 * H), rnd(3 * H)]
    params = [t.clone().requires_grad_() for t in (x, h0, *w)]
    rows = []

    def su_case(rate, train, flag, split, closed_half=False, compact=True):
        g = _slab(T, H, rate, dev, dt)
        if closed_half:  # every other step computes no neuron
            g = g * (torch.arange(T, device=dev) % 2 == 0).to(dt)[:, None]

        def call():
            old = launch.COMPACT_MIN_CLOSED
            launch.COMPACT_MIN_CLOSED = old if compact else 2.0  # 2: never compact
            try:
                if train:
                    xp, hp, *wp = params
                    out, h = op.su_gru_triton(xp, hp, *wp, g, g != 0, graphs=flag)
                    (out.float().sum() + h.float().sum()).backward()
                else:
                    with torch.no_grad():
                        op.su_gru_triton(x, h0, *w, g, g != 0, graphs=flag)
            finally:
                launch.COMPACT_MIN_CLOSED = old

        return call

    gru = torch.nn.GRU(D, H, batch_first=True).to(dev, dt)
    xg = x.clone().requires_grad_()

    def gru_case(train):
        def call():
            if train:
                out, h = gru(xg, h0[None])
                (out.float().sum() + h.float().sum()).backward()
            else:
                with torch.no_grad():
                    gru(x, h0[None])

        return call

    cases = [
        ("nn.GRU fwd", 1.0, False, None, None, gru_case(False)),
        ("nn.GRU train", 1.0, True, None, None, gru_case(True)),
    ]
    for rate in a.rates:
        for train in (False, True):
            variants = ((True, None), (False, None), (True, "1")) if a.variants else ((True, None),)
            for flag, split in variants:
                name = f"su rate {rate:g} {'train' if train else 'fwd'}"
                name += "" if flag else " eager"
                name += "" if split is None else " no split-K"
                cases.append((name, rate, train, flag, split, su_case(rate, train, flag, split)))
    if a.variants:  # the backward's gradient GEMMs over the open steps only, and dense
        for compact in (True, False):
            name = "su rate 0.17 train closed/2" + ("" if compact else " dense")
            cases.append(
                (name, 0.17, True, True, None, su_case(0.17, True, True, None, True, compact))
            )
    for name, rate, train, flag, split, fn in cases:
        old = os.environ.get(launch.ENV_SPLIT)
        if split is not None:
            os.environ[launch.ENV_SPLIT] = split
        try:
            for _ in range(
                3 if flag and cuda else 1
            ):  # warm-up: compile; graphs: first use, capture
                fn()
            runs = [_timed(fn, cuda) for _ in range(a.reps)]
        finally:
            if split is not None:
                if old is None:
                    os.environ.pop(launch.ENV_SPLIT, None)
                else:
                    os.environ[launch.ENV_SPLIT] = old
        total = statistics.median(r[0] for r in runs)
        phases = {
            k: statistics.median(r[1].get(k, 0.0) for r in runs)
            for k in sorted({k for r in runs for k in r[1]})
        }
        row = dict(
            case=name,
            update_rate=rate,
            train=train,
            graphs=flag,
            split_k=split is None,
            median_ms=total,
            per_step_us=1e3 * total / T,
            phases_per_step_us={k: 1e3 * v / T for k, v in phases.items()},
            times_ms=[r[0] for r in runs],
        )
        if name.startswith("su") and flag and split is None and "closed" not in name:
            est = launch.step_cost(B, D, H, rate, 2 if dt == torch.bfloat16 else 4, train)
            row["estimate_per_step_us"] = 1e6 * est["total_time_s"]
        rows.append(row)
        print(f"{name:<34}{total:>10.2f} ms{1e3 * total / T:>9.2f} us/step", flush=True)
    base = {r["train"]: r["median_ms"] for r in rows if r["case"].startswith("nn.GRU")}
    for r in rows:
        r["speedup_vs_nn_gru"] = base[r["train"]] / r["median_ms"]
    out = dict(
        device=device_name(dev),
        dtype=a.dtype,
        sizes=dict(B=B, T=T, D=D, H=H),
        reps=a.reps,
        rows=rows,
        graph_stats=dict(graphs.CACHE.stats),
        eager_keys=[str(k[:5]) + ": " + v for k, v in graphs.CACHE.eager_keys().items()],
        roofline={
            str(r): launch.step_cost(B, D, H, r, 2 if dt == torch.bfloat16 else 4) for r in a.rates
        },
    )
    return out


# -- summary -------------------------------------------------------------------------------
def summary(a) -> dict:
    parts = {}
    for p in a.parts:
        name, _, path = p.partition("=")
        f = Path(path)
        parts[name] = json.loads(f.read_text()) if f.exists() else dict(missing=str(f))
    import triton

    res = dict(
        kind=KIND,
        device=device_name(torch.device(a.device)),
        commit=git_commit(ROOT, short=True),
        torch=torch.__version__,
        triton=triton.__version__,
        dry_run=a.dry_run,
        **parts,
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print_tables(res)
    return res


def print_tables(r: dict) -> None:
    print(
        f"{r['device']}  commit {r['commit']}  torch {r['torch']}  triton {r['triton']}"
        + ("  (DRY RUN: CPU interpreter, tiny sizes)" if r.get("dry_run") else "")
    )
    t = r.get("tests", {})
    print(f"kernel tests: {t.get('result', '?')}")
    for tool, v in r.get("sanitizer", {}).items():
        print(f"compute-sanitizer {tool}: {v.get('result', '?')}")
    lg = r.get("long", {})
    if "error_vs_float64" in lg:
        worst = max(lg["error_vs_float64"].values())
        print(
            f"long run {lg['sizes']} {lg['dtype']}: worst error vs float64 {worst:.3g} "
            f"(tolerance {lg['tolerance']}) -> {'ok' if lg['ok'] else 'FAILED'}"
        )
    tm = r.get("timings", {})
    if tm.get("rows"):
        s = tm["sizes"]
        print(f"timings {tm['dtype']} B={s['B']} T={s['T']} D={s['D']} H={s['H']}:")
        print(f"{'case':<34}{'ms':>9}{'us/step':>9}{'est.':>7}{'vs nn.GRU':>10}  phases us/step")
        for row in tm["rows"]:
            est = row.get("estimate_per_step_us")
            ph = " ".join(f"{k}={v:.2f}" for k, v in row["phases_per_step_us"].items())
            print(
                f"{row['case']:<34}{row['median_ms']:>9.2f}{row['per_step_us']:>9.2f}"
                f"{(f'{est:.1f}' if est else '-'):>7}{row['speedup_vs_nn_gru']:>10.2f}  {ph}"
            )
    for k in tm.get("eager_keys", []):
        print("  ran eagerly:", k)
    rh = r.get("rhythm", {})
    if rh.get("rows"):
        print(
            f"learned rhythm (free phases), {rh['dtype']} B={rh['sizes']['B']} T={rh['sizes']['T']} "
            f"H={rh['sizes']['H']} (scripts/bench_surnn.py):"
        )
        print(f"{'case':<22}{'rate':>7}{'median ms':>11}{'vs nn.GRU':>10}{'vs rate1':>9}")
        for row in rh["rows"]:
            print(
                f"{row['case']:<22}{row['update_rate']:>7.3f}{row['median_s'] * 1e3:>11.2f}"
                f"{row['speedup_vs_nn_gru']:>10.2f}{row['speedup_vs_rate1']:>9.2f}"
            )


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("step", choices=("sanitize", "long", "timings", "summary"))
    p.add_argument("parts", nargs="*", help="summary: NAME=PATH of each part's JSON")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.17])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument(
        "--quick",
        action="store_true",
        help="timings: only the default variant (graphs and split-K as chosen)",
    )
    return p.parse_intermixed_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    a.variants = not a.quick
    if a.step == "summary":
        summary(a)
        return 0
    res = {"sanitize": sanitize, "long": long_run, "timings": timings}[a.step](a)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
