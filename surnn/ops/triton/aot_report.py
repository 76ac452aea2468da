"""The table of the ahead-of-time compiles (aot.py): one row per compiled kernel (registers,
spills, stack, shared memory, MMA instructions per dot, asynchronous copies, the IR checks'
findings), written as Markdown and JSON, and the command that compiles and writes it:

  python -m surnn.ops.triton.aot_report [--out results/bench/triton_kernels] [--jobs N]

(scripts/triton_report.py runs the same ``main``). Exit status 1 when a kernel does not
compile or fails an IR check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from surnn.ops.triton import launch
from surnn.ops.triton.aot import ARCHS, DTYPES, Job, Result, compile_all, ir_check, jobs, plan_kind
from surnn.provenance import ROOT, command_line, git_commit, now_iso


def _variant(job: Job) -> str:
    return {"fwd": "SAVE=0", "fwd_save": "SAVE=1", "bwd": "time-only g", "bwd_ps": "per-sample g"}[
        job.body
    ]


def _mma_cell(ir: dict) -> str:
    """MMA instructions per warp per dot (and the ideal count where it differs)."""
    tc = [d for d in ir.get("dots", []) if d["tensor_core"]]
    if not tc:
        return "FMA" if ir.get("dots") else "-"
    cells = {
        f"{d['per_warp']}" + ("" if d["per_warp"] <= d["ideal"] else f" (ideal {d['ideal']:g})")
        for d in tc
    }
    v = tc[0]["version"]
    return f"{'/'.join(sorted(cells))} {'wgmma' if v == 3 else 'mma.sync'}"


def rows(results: list[Result]) -> list[dict]:
    out = []
    for r in results:
        j = r.job
        row = dict(
            kernel=j.kernel,
            variant=_variant(j),
            arch=f"sm_{j.arch}",
            dtype=j.dtype,
            shape=j.shape,
            B=j.B,
            D=j.D,
            H=j.H,
            block_b=j.cfg.block_b,
            block_h=j.cfg.block_h,
            block_k=j.cfg.block_k,
            warps=j.cfg.num_warps,
            block_k_run=launch.block_k_for(j.cfg, plan_kind(j.dtype)),
        )
        row.update(
            ok=r.ok,
            regs=r.regs,
            spill_stores=r.spill_stores,
            spill_loads=r.spill_loads,
            stack=r.stack,
            shared=r.shared,
            num_warps=r.num_warps,
            compile_s=round(r.compile_s, 2),
            error=r.error,
            signature=r.signature,
            ir=r.ir,
            problems=ir_check(r),
        )
        out.append(row)
    return out


def markdown(table: list[dict], meta: dict) -> str:
    import triton

    lines = [
        "# Triton kernels of the suRNN layer, compiled ahead of time",
        "",
        f"`python scripts/triton_report.py` (surnn/ops/triton/aot.py), triton {triton.__version__}, "
        f"commit {meta.get('commit', '?')}. Compiled for CUDA targets on a machine with no GPU: "
        "these numbers come from ptxas/cuobjdump and the compiler's IR, not from a run. Every "
        "kernel the op launches x every dispatcher configuration (`launch.CFG_TABLE`; sm_80: "
        "`launch.CFG_TABLE_SM80`) x fp32 "
        "(IEEE dots) / fp32 with TF32 dots / bf16 x sm_80/sm_90 x two shape classes (`aligned`: "
        "B, D, H multiples of 16, the usual case; `odd`: none, the most general code). BLOCK_K is the "
        "run's (`launch.block_k_for`: the table's for bf16, half for TF32, 16 for IEEE). Arguments "
        "and warps specialised as `triton.jit` does at the op's launch; 3 stages. regs: "
        "registers per thread (of 255); spills: bytes of spill stores/loads per thread; stack: "
        "local memory per thread; smem: shared memory bytes per program; MMA/dot: tensor-core "
        "instructions each warp issues per dot (every dot at its ideal count: no warp repeats an "
        "MMA); cp.async: asynchronous copies in the PTX; check: the IR checks of "
        "`aot.ir_check` (no spills, ideal MMA count, tensor cores where the dtype asks for them, "
        "async copies).",
        "",
        f"{meta['n_ok']}/{meta['n']} compiled; max registers {meta['max_regs']}, kernels that "
        f"spill: {meta['n_spill']}, kernels failing an IR check: {meta['n_bad']}.",
        "",
        *_findings(table),
        "",
        "| kernel | variant | arch | dtype | shape | BLOCK_B x H x K, warps | regs | spills st/ld "
        "| stack | smem | MMA/dot | cp.async | check |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in table:
        blk = f"{r['block_b']}x{r['block_h']}x{r['block_k_run']}, {r['warps']}"
        ok = r["ok"]
        sp = f"{r['spill_stores']}/{r['spill_loads']}" if ok else "-"
        check = "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])[:120]
        lines.append(
            f"| {r['kernel']} | {r['variant']} | {r['arch']} | {r['dtype']} | {r['shape']} | "
            f"{blk} | {r['regs'] if ok else '-'} | {sp} | {r['stack'] if ok else '-'} | "
            f"{r['shared'] if ok else '-'} | {_mma_cell(r['ir']) if ok else '-'} | "
            f"{r['ir'].get('ptx_cp_async', '-') if ok else '-'} | {check} |"
        )
    return "\n".join(lines) + "\n"


def _findings(table: list[dict]) -> list[str]:
    """Bullet lines: what spills, sits at the 255-register cap or fails a check; the largest
    smem."""
    ok = [r for r in table if r["ok"]]
    spill = [r for r in ok if r["spill_stores"] or r["spill_loads"]]
    capped = [r for r in ok if r["regs"] >= 255]
    bad = [r for r in table if r["problems"]]

    def name(r):
        return f"{r['kernel']} {r['variant']} {r['arch']} {r['dtype']} {r['shape']} BLOCK_B={r['block_b']}"

    def listed(rs, extra=lambda r: ""):
        return ": " + "; ".join(name(r) + extra(r) for r in rs) if rs else ""

    out = [f"- at the 255-register cap: {len(capped)} of {len(ok)}{listed(capped)}"]
    out.append(
        f"- spilling: {len(spill)} of {len(ok)}"
        + listed(spill, lambda r: f" ({r['spill_stores']}/{r['spill_loads']} B)")
    )
    out.append(
        f"- failing an IR check: {len(bad)} of {len(table)}"
        + listed(bad, lambda r: f" ({'; '.join(r['problems'])})")
    )
    if ok:
        big = max(ok, key=lambda r: r["shared"])
        out.append(f"- most shared memory: {big['shared']} B ({name(big)})")
    return out


def summary(table: list[dict]) -> dict:
    ok = [r for r in table if r["ok"]]
    return dict(
        n=len(table),
        n_ok=len(ok),
        max_regs=max((r["regs"] for r in ok), default=None),
        n_spill=sum(1 for r in ok if r["spill_stores"] or r["spill_loads"]),
        n_bad=sum(1 for r in table if r["problems"]),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", default="results/bench/triton_kernels", help="writes OUT.md and OUT.json"
    )
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPUs)")
    ap.add_argument("--arch", type=int, nargs="*", default=list(ARCHS))
    ap.add_argument("--dtype", nargs="*", default=list(DTYPES))
    ap.add_argument(
        "--fresh-cache",
        action="store_true",
        help="compile into an empty Triton cache (times a cold build)",
    )
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        results = compile_all(
            jobs(tuple(a.arch), tuple(a.dtype)), a.jobs, d if a.fresh_cache else None
        )
    wall = time.perf_counter() - t0
    table = rows(results)
    meta = dict(
        summary(table),
        command=command_line(ROOT / "scripts" / "triton_report.py", argv),
        commit=git_commit(short=True),
        date=now_iso(),
        wall_s=round(wall, 1),
    )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(table, meta))
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=table), indent=1) + "\n")
    print(
        f"{meta['n_ok']}/{meta['n']} kernels compiled in {wall:.1f} s; max regs "
        f"{meta['max_regs']}; spilling: {meta['n_spill']}; failing an IR check: "
        f"{meta['n_bad']} -> {out}.md, .json"
    )
    for r in table:
        if r["problems"]:
            print(
                f"FAILED {r['kernel']} {r['variant']} {r['arch']} {r['dtype']} {r['shape']} "
                f"{r['block_b']}x{r['block_h']}: {'; '.join(r['problems'])}",
                file=sys.stderr,
            )
    return 0 if meta["n_ok"] == meta["n"] and not meta["n_bad"] else 1


if __name__ == "__main__":
    sys.exit(main())
