"""Time the Triton suRNN layer's step loops launched eagerly (one Python launch per step
forward, two backward) against the same loops replayed as CUDA graphs
(surnn/ops/triton/graphs.py). Interleaved repetitions, medians; the speedup is the median
of the per-repetition ratios. Writes JSON (--out) and prints a table. Run by
scripts/gpu_check.sh; NOT RUN ON A GPU YET (written without one).

    python scripts/bench_graphs.py --device cuda --dtype bf16 --batch 64 --seq 4096 --dim 256 --hidden 256

On the CPU (the gpu_check.sh --dry-run) there are no CUDA graphs: both columns time the
eager loop under the Triton interpreter and the JSON says graphs_used=false.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from surnn.ops.triton import graphs
from surnn.ops.triton.op import su_gru_triton


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--rate", type=float, default=0.17, help="update rate (interval schedule)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--label", default="")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    dev = torch.device(a.device)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    B, T, D, H = a.batch, a.seq, a.dim, a.hidden
    gen = torch.Generator().manual_seed(0)

    def rnd(*s, scale=0.3):
        return (torch.randn(*s, generator=gen) * scale).to(dev, dt)

    x, h0 = rnd(B, T, D), rnd(B, H)
    w = [rnd(3 * H, D), rnd(3 * H, H), rnd(3 * H), rnd(3 * H)]
    period = max(1, round(1 / a.rate))
    off = torch.arange(H) * period // H  # staggered slabs: one slab of neurons per step
    g = ((torch.arange(T)[:, None] + off[None]) % period == 0).to(dev, dt)
    active = g != 0
    params = [t.clone().requires_grad_() for t in (x, h0, *w)]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def fwd(flag):
        with torch.no_grad():
            su_gru_triton(x, h0, *w, g, active, graphs=flag)

    def train(flag):
        xp, hp, *wp = params
        out, h = su_gru_triton(xp, hp, *wp, g, active, graphs=flag)
        (out.float().sum() + h.float().sum()).backward()

    def timed(fn, flag):
        sync()
        t0 = time.perf_counter()
        fn(flag)
        sync()
        return time.perf_counter() - t0

    rows = []
    for name, fn in (("fwd", fwd), ("train", train)):
        for flag in (False, True):  # warm-up: compiles the kernels, captures the graphs
            fn(flag)
        eager, graph = [], []
        for _ in range(a.reps):
            eager.append(timed(fn, False))
            graph.append(timed(fn, True))
        launches = T if name == "fwd" else 3 * T
        rows.append(
            dict(
                case=name,
                launches=launches,
                eager_ms=statistics.median(eager) * 1e3,
                graph_ms=statistics.median(graph) * 1e3,
                speedup=statistics.median(e / g_ for e, g_ in zip(eager, graph)),
                eager_us_per_launch=statistics.median(eager) / launches * 1e6,
                graph_us_per_launch=statistics.median(graph) / launches * 1e6,
                eager_times=eager,
                graph_times=graph,
            )
        )
    st = dict(graphs.CACHE.stats)
    res = dict(
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        dtype=a.dtype,
        sizes=dict(B=B, T=T, D=D, H=H),
        rate=a.rate,
        reps=a.reps,
        graphs_used=st.get("captured", 0) > 0 and not graphs.CACHE.eager_keys(),
        graph_stats=st,
        eager_keys=[str(k[:2]) + ": " + v for k, v in graphs.CACHE.eager_keys().items()],
        rows=rows,
        label=a.label,
        torch=torch.__version__,
    )
    print(
        f"{res['device']} {a.dtype} B={B} T={T} D={D} H={H} rate {a.rate}: "
        f"graphs used: {res['graphs_used']} {st}"
    )
    print(
        f"{'case':<7}{'launches':>9}{'eager ms':>10}{'graph ms':>10}{'speedup':>9}"
        f"{'eager us/launch':>17}{'graph us/launch':>17}"
    )
    for r in rows:
        print(
            f"{r['case']:<7}{r['launches']:>9}{r['eager_ms']:>10.2f}{r['graph_ms']:>10.2f}"
            f"{r['speedup']:>9.2f}{r['eager_us_per_launch']:>17.2f}{r['graph_us_per_launch']:>17.2f}"
        )
    for k in res["eager_keys"]:
        print("eager:", k)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
