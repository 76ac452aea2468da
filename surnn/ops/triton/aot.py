"""Ahead-of-time compilation of every Triton kernel of the layer for CUDA targets, on a
machine without a GPU (the triton wheel ships ptxas and cuobjdump).

What is compiled is what the op would launch, not a hand-written copy of it: the op's
step-loop bodies (op._fwd_body with and without saving, op._bwd_body) run on meta
tensors with a recorder in place of the kernels module, and each recorded launch's
arguments are specialised exactly as triton.jit specialises them at a launch (pointer
dtypes and 16-byte alignment, integers equal to 1 or divisible by 16, do_not_specialize,
constexprs). This is done for every configuration the dispatcher can pick
(op.cfg_choices(), the rows of op._CFG_TABLE, each reached through op._cfg itself with a
batch size that picks it) x fp32 and bf16 x sm_80 and sm_90 x two shape classes
("aligned": B, D, H multiples of 16, the usual case; "odd": none of them, the most
general code). Each compile goes through triton.compile to a cubin (ptxas included);
registers and local-memory stack come from the cubin (cuobjdump), spill bytes from the
ptxas log of that compile, shared memory from Triton's metadata.

  python -m surnn.ops.triton.aot [--out results/bench/triton_kernels] [--jobs N]
writes the table (.md) and the rows (.json); scripts/triton_report.py does the same.
tests/surnn/test_triton_aot.py compiles the whole matrix and fails on any error.

Compiling for a target proves the kernels build for it and shows their resource use; it
does not run them (no GPU was used for this: correctness on CUDA is the job of
scripts/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

ARCHS = (80, 90)
DTYPES = ("fp32", "bf16")
# shape classes: D, H and the candidate batch sizes probed through _cfg
SHAPES = {
    "aligned": dict(D=64, H=64, batches=[16 * i for i in range(1, 65)]),
    "odd": dict(D=40, H=40, batches=[2 * i + 3 for i in range(512)]),
}
BODIES = ("fwd", "fwd_save", "bwd")
_TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Job:
    kernel: str
    body: str  # which op body launches it: fwd, fwd_save, bwd
    shape: str  # shape class
    B: int
    D: int
    H: int
    cfg: tuple[int, int, int]
    dtype: str
    arch: int
    source: str = ""  # a kernels.py to compile instead of the package's (tests break a copy)


@dataclass
class Result:
    job: Job
    ok: bool
    error: str = ""
    regs: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack: int | None = None
    shared: int | None = None
    num_warps: int | None = None
    compile_s: float = 0.0
    signature: dict = field(default_factory=dict)


# -- enumeration ---------------------------------------------------------------------------
def cfg_cases(shape: str) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """For each configuration the dispatcher can pick: a (B, D, H) of this shape class for
    which op._cfg picks it (the first candidate batch size that does)."""
    from surnn.ops.triton.op import _cfg, cfg_choices

    spec = SHAPES[shape]
    D, H = spec["D"], spec["H"]
    found: dict = {}
    for B in spec["batches"]:
        found.setdefault(_cfg(B, D, H), (B, D, H))
    missing = [c for c in cfg_choices() if c not in found]
    if missing:
        raise RuntimeError(f"no {shape} batch size in aot.SHAPES makes _cfg pick {missing}")
    unknown = [c for c in found if c not in cfg_choices()]
    if unknown:
        raise RuntimeError(f"_cfg returned {unknown}, not in op._CFG_TABLE")
    return {c: found[c] for c in cfg_choices()}


def jobs(archs=ARCHS, dtypes=DTYPES, shapes=tuple(SHAPES)) -> list[Job]:
    """The whole matrix: every launched kernel x configuration x dtype x arch x shape."""
    out = []
    for shape in shapes:
        for cfg, (B, D, H) in cfg_cases(shape).items():
            for dtype in dtypes:
                for body in BODIES:
                    for name in dict.fromkeys(n for n, _, _ in record(body, B, D, H, dtype)):
                        for arch in archs:
                            out.append(Job(name, body, shape, B, D, H, cfg, dtype, arch))
    return out


def ci_jobs() -> list[Job]:
    """What tests/surnn/test_triton_aot.py compiles on every CI run (a cold build of the whole
    matrix, 64 kernels, takes ~3 min on 2 busy cores): sm_90 in full for the aligned
    shapes (every kernel x configuration x dtype: 16), and on sm_80 the two kernels with
    tensor-core dots (fwd_step with SAVE, bwd_matmul) in bf16 at the largest tiles.
    SURNN_AOT_FULL=1 makes the test compile the whole matrix."""
    if os.environ.get("SURNN_AOT_FULL", "") not in ("", "0"):
        return jobs()
    big = max(cfg_cases("aligned"))
    sm80 = {("fwd_step", "fwd_save"), ("bwd_matmul", "bwd")}
    return [
        j
        for j in jobs(shapes=("aligned",))
        if j.arch == 90
        or (j.arch == 80 and j.cfg == big and j.dtype == "bf16" and (j.kernel, j.body) in sm80)
    ]


class _Recorder:
    """Stands in for the kernels module: ``k.name[grid](*args, **kw)`` is recorded."""

    def __init__(self):
        self.launches: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        rec = self

        class _K:
            def __getitem__(self, grid):
                return lambda *a, **kw: rec.launches.append((name, a, kw))

        return _K()


def record(body: str, B: int, D: int, H: int, dtype: str, T: int = 1):
    """The launches of one op body for these sizes, on meta tensors (nothing runs)."""
    from surnn.ops.triton import op

    dt, m = _TORCH_DTYPE[dtype], "meta"
    x = torch.empty(B, T, D, device=m, dtype=dt)
    h0 = torch.empty(B, H, device=m, dtype=dt)
    w_ih, w_hh = (
        torch.empty(3 * H, D, device=m, dtype=dt),
        torch.empty(3 * H, H, device=m, dtype=dt),
    )
    b = torch.empty(3 * H, device=m, dtype=dt)
    g = torch.empty(T, H, device=m, dtype=dt)
    active = torch.empty(T, H, device=m, dtype=torch.bool)
    lengths = torch.empty(B, device=m, dtype=torch.int64)
    rec = _Recorder()
    if body in ("fwd", "fwd_save"):
        save = body == "fwd_save"
        s = op._fwd_inputs(x, h0, w_ih, w_hh, b, b, g, active, lengths)
        s.update(op._fwd_alloc(s, save))
        op._fwd_body(rec, s, save)
    else:
        saved = torch.empty(5, B, T, H, device=m, dtype=torch.float32)
        go = torch.empty(B, T, H, device=m, dtype=dt)
        s = op._bwd_inputs(go, h0, x, w_ih, w_hh, g, active, lengths, saved)
        s.update(op._bwd_alloc(s))
        op._bwd_body(rec, s)
    return rec.launches


# -- compiling (in worker processes: the kernels must be imported without the interpreter)
def _real_kernels(source: str = ""):
    """The kernels module decorated for compiling (never the interpreter's): call only in
    a worker process, as it drops TRITON_INTERPRET from the environment."""
    import importlib
    import importlib.util

    os.environ.pop("TRITON_INTERPRET", None)
    import triton

    if source:  # a stand-alone copy of kernels.py (it imports only triton)
        name = f"_surnn_aot_kernels_{abs(hash(source))}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, source)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        return sys.modules[name]
    mod = sys.modules.get("surnn.ops.triton.kernels")
    if mod is None:
        mod = importlib.import_module("surnn.ops.triton.kernels")
    if not isinstance(mod.fwd_step, triton.runtime.jit.JITFunction):
        mod = importlib.reload(mod)  # it was decorated under TRITON_INTERPRET=1
    return mod


def public_kernels() -> list[str]:
    """The launchable kernels of kernels.py (every @triton.jit function not named _private),
    read from its source (importing it here could undo TRITON_INTERPRET for the caller)."""
    import ast

    src = Path(__file__).with_name("kernels.py").read_text()
    out = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            for d in node.decorator_list:
                d = d.func if isinstance(d, ast.Call) else d
                if ast.unparse(d) in ("triton.jit", "jit"):
                    out.append(node.name)
    return sorted(out)


def specialise(fn, args: tuple, kwargs: dict):
    """(signature, constexprs, attrs) as triton.jit builds them for this launch."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    bound = dict(zip([p.name for p in fn.params], args))
    bound.update(kwargs)
    sig, constexprs, attrs = {}, {}, {}
    for p in fn.params:
        v = bound[p.name]
        if p.is_constexpr:
            sig[p.name], constexprs[p.name] = "constexpr", v
            continue
        ty, attr = native_specialize_impl(
            BaseBackend,
            v,
            p.is_const,
            not p.do_not_specialize,
            not p.do_not_specialize_on_alignment,
        )
        sig[p.name] = ty
        if ty == "constexpr":
            constexprs[p.name] = attr
        elif isinstance(attr, str) and attr:
            attrs[(p.num,)] = BaseBackend.parse_attr(attr)
    return sig, constexprs, attrs


def _tool(name: str) -> str:
    from triton import knobs

    return getattr(knobs.nvidia, name).path


def _resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        txt = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", f.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", txt)
    if not m:
        raise RuntimeError(f"cuobjdump: no resource usage in\n{txt}")
    return dict(regs=int(m[1]), stack=int(m[2]), static_shared=int(m[3]), local=int(m[4]))


def _spills(log: str, ptx: str, arch: int) -> tuple[int, int]:
    """Spill bytes from ptxas -v: the log of Triton's own ptxas run when it was captured,
    else a rerun of ptxas with Triton's flags (a cache hit runs no ptxas)."""
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not m:
        from triton.backends.nvidia.compiler import sm_arch_from_capability

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "k.ptx"
            p.write_text(ptx)
            r = subprocess.run(
                [
                    _tool("ptxas"),
                    "-lineinfo",
                    "-v",
                    "--regAllocOptLevel=2",
                    f"--gpu-name={sm_arch_from_capability(arch)}",
                    str(p),
                    "-o",
                    str(p) + ".o",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr + r.stdout)
    return int(m[1]), int(m[2])


def compile_job(job: Job) -> Result:
    """Compile one kernel for one target; errors are returned, not raised."""
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    t0 = time.perf_counter()
    sig = {}
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        k = _real_kernels(job.source)
        fn = getattr(k, job.kernel)
        (name, args, kw), *_ = [
            r for r in record(job.body, job.B, job.D, job.H, job.dtype) if r[0] == job.kernel
        ]
        sig, constexprs, attrs = specialise(fn, args, kw)
        src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ck = triton.compile(src, target=GPUTarget("cuda", job.arch, 32))
        res = _resources(ck.asm["cubin"])
        stores, loads = _spills(buf.getvalue(), ck.asm["ptx"], job.arch)
        return Result(
            job,
            True,
            regs=res["regs"],
            spill_stores=stores,
            spill_loads=loads,
            stack=res["stack"],
            shared=ck.metadata.shared + res["static_shared"],
            num_warps=ck.metadata.num_warps,
            compile_s=time.perf_counter() - t0,
            signature={n: str(v) for n, v in sig.items()},
        )
    except Exception as err:
        msg, seen, e = "", set(), err
        while e is not None and id(e) not in seen:  # the compiler's reason is often a cause
            seen.add(id(e))
            msg += f"{type(e).__name__}: {e}\n"
            e = e.__cause__ or e.__context__
        return Result(
            job,
            False,
            error=msg.strip()[-4000:],
            compile_s=time.perf_counter() - t0,
            signature={n: str(v) for n, v in sig.items()},
        )


def _init_worker(cache_dir: str | None):
    os.environ.pop("TRITON_INTERPRET", None)
    if cache_dir:
        os.environ["TRITON_CACHE_DIR"] = cache_dir
    torch.set_num_threads(1)


def compile_all(
    job_list: list[Job] | None = None, workers: int | None = None, cache_dir: str | None = None
) -> list[Result]:
    """Compile every job in ``workers`` fresh processes (default: one per CPU); results in
    job order. ``cache_dir``: Triton's cache (None: its default; a fresh folder makes
    every kernel compile)."""
    job_list = jobs() if job_list is None else job_list
    workers = workers or os.cpu_count() or 1
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no TRITON_INTERPRET-decorated kernels
    # The workers inherit the environment when they start: without TRITON_INTERPRET, even
    # where the caller (e.g. the interpreter tests in the same pytest run) has set it.
    interpret = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(cache_dir,)
        ) as ex:
            return list(ex.map(compile_job, job_list, chunksize=1))
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret


# -- the table ---------------------------------------------------------------------------
def _variant(job: Job) -> str:
    return {"fwd": "SAVE=0", "fwd_save": "SAVE=1"}.get(job.body, "")


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
            block_b=j.cfg[0],
            block_h=j.cfg[1],
            block_k=j.cfg[2],
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
        "these numbers come from ptxas/cuobjdump, not from a run. Every kernel the op launches "
        "x every dispatcher configuration (`op._CFG_TABLE`) x fp32/bf16 x sm_80/sm_90 x two "
        "shape classes (`aligned`: B, D, H multiples of 16, the usual case; `odd`: none, the most "
        "general code). Arguments specialised as `triton.jit` does at a launch; 4 warps, 3 "
        "stages (the launch defaults). regs: registers per thread (of 255); spills: bytes of "
        "spill stores/loads per thread; stack: local memory per thread; smem: shared memory "
        "bytes per program.",
        "",
        f"{meta['n_ok']}/{meta['n']} compiled; max registers {meta['max_regs']}, kernels that "
        f"spill: {meta['n_spill']}.",
        "",
        *_findings(table),
        "",
        "| kernel | variant | arch | dtype | shape | BLOCK_B x H x K | regs | spills st/ld | stack | smem | ok |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in table:
        blk = f"{r['block_b']}x{r['block_h']}x{r['block_k']}"
        if r["kernel"] != "fwd_step":
            blk = f"{r['block_b']}x{r['block_h']}"
        sp = f"{r['spill_stores']}/{r['spill_loads']}" if r["ok"] else "-"
        lines.append(
            f"| {r['kernel']} | {r['variant']} | {r['arch']} | {r['dtype']} | {r['shape']} | "
            f"{blk} | {r['regs'] if r['ok'] else '-'} | {sp} | "
            f"{r['stack'] if r['ok'] else '-'} | {r['shared'] if r['ok'] else '-'} | "
            f"{'yes' if r['ok'] else 'ERROR: ' + r['error'].splitlines()[0][:80]} |"
        )
    return "\n".join(lines) + "\n"


def _findings(table: list[dict]) -> list[str]:
    """Bullet lines: what spills or sits at the 255-register cap, and the largest smem."""
    ok = [r for r in table if r["ok"]]
    spill = [r for r in ok if r["spill_stores"] or r["spill_loads"]]
    capped = [r for r in ok if r["regs"] >= 255]

    def name(r):
        v = f" {r['variant']}" if r["variant"] else ""
        return f"{r['kernel']}{v} {r['arch']} {r['dtype']} {r['shape']} BLOCK_B={r['block_b']}"

    out = [
        f"- at the 255-register cap: {len(capped)} of {len(ok)}"
        + (": " + "; ".join(name(r) for r in capped) if capped else "")
    ]
    out.append(
        f"- spilling: {len(spill)} of {len(ok)}"
        + (
            ": " + "; ".join(f"{name(r)} ({r['spill_stores']}/{r['spill_loads']} B)" for r in spill)
            if spill
            else ""
        )
    )
    if ok:
        big = max(ok, key=lambda r: r["shared"])
        out.append(
            f"- most shared memory: {big['shared']} B ({name(big)}); every kernel runs "
            f"4 warps (128 threads) per program"
        )
    return out


def summary(table: list[dict]) -> dict:
    ok = [r for r in table if r["ok"]]
    return dict(
        n=len(table),
        n_ok=len(ok),
        max_regs=max((r["regs"] for r in ok), default=None),
        n_spill=sum(1 for r in ok if r["spill_stores"] or r["spill_loads"]),
    )


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        return "?"


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
    meta = dict(summary(table), commit=_commit(), wall_s=round(wall, 1))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(table, meta))
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=table), indent=1) + "\n")
    print(
        f"{meta['n_ok']}/{meta['n']} kernels compiled in {wall:.1f} s; max regs "
        f"{meta['max_regs']}; spilling: {meta['n_spill']} -> {out}.md, .json"
    )
    for r in table:
        if not r["ok"]:
            print(
                f"FAILED {r['kernel']} {r['variant']} {r['arch']} {r['dtype']} {r['shape']} "
                f"{r['block_b']}x{r['block_h']}: {r['error']}",
                file=sys.stderr,
            )
    return 0 if meta["n_ok"] == meta["n"] else 1


if __name__ == "__main__":
    sys.exit(main())
