"""Ahead-of-time compilation of every Triton kernel of the layer for CUDA targets, on a
machine without a GPU (the triton wheel ships ptxas and cuobjdump), and checks of what the
compiler made of them.

What is compiled is what the op would launch, not a hand-written copy of it: the op's chunk
loops (loops.Fwd with and without saving the state, loops.Bwd with a time-only and a per-sample
gate) are built on meta tensors and their launches recorded with a stand-in for the kernels
module, and each recorded launch's arguments are specialised exactly as triton.jit
specialises them at a launch (pointer dtypes and 16-byte alignment, integers equal to 1 or
divisible by 16, do_not_specialize, constexprs, num_warps). This is done for every
configuration the dispatcher can pick (launch.cfg_choices(), the rows of launch.CFG_TABLE,
each reached through launch.cfg_for with a batch size that picks it; sm_80 has its own
table, launch.CFG_TABLE_SM80) x fp32 (IEEE dots), fp32
with TF32 dots and bf16 x sm_80 and sm_90 x two shape classes ("aligned": B, D, H multiples of
16, the usual case; "odd": none of them, the most general code). H is large enough for the
split-K path to be compiled in. Each compile goes through triton.compile to a cubin (ptxas
included); registers and local-memory stack come from the cubin (cuobjdump), spill bytes from
the ptxas log of that compile, shared memory from Triton's metadata.

The IR checks (``ir_check``; tests/surnn/test_triton_aot.py applies them to every compile):
no spills; every tensor-core dot (TTGIR ``tt.dot`` on an ``nvidia_mma`` layout, or sm_90's
``ttng.warp_group_dot``) issues the ideal number of MMA instructions per warp,
M*N*K / (instruction M*N*K) / warps, i.e. its warps tile the dot without repeating an MMA,
and the PTX holds exactly that many MMA instructions; TF32 and bf16 dots are on tensor cores
and IEEE fp32 dots are not; the loads of the dots' operands are asynchronous copies
(``cp.async``) feeding a software pipeline.

  python -m surnn.ops.triton.aot_report [--out results/bench/triton_kernels] [--jobs N]
writes the table (.md) and the rows (.json) (aot_report.py); scripts/triton_report.py does the
same.

Compiling for a target proves the kernels build for it and shows their resource use; it
does not run them (no GPU was used for this: correctness on CUDA is the job of
scripts/gpu_check.sh).
"""

from __future__ import annotations

import contextlib
import io
import math
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

from surnn.ops.triton import launch

ARCHS = (80, 90)
# storage dtype and the dots' precision: fp32 with IEEE dots, fp32 with TF32 dots, bf16
DTYPES = ("fp32", "tf32", "bf16")
# shape classes: D, H and the candidate batch sizes probed through launch.cfg_for
# H large enough that every configuration splits (launch.split_max), so that the split-K
# path is compiled in; odd H has padded rows (HP = 1296)
SHAPES = {
    "aligned": dict(D=64, H=1280, batches=[16 * i for i in range(1, 65)]),
    "odd": dict(D=40, H=1290, batches=[2 * i + 3 for i in range(512)]),
}
BODIES = ("fwd", "fwd_save", "bwd", "bwd_ps")
_TORCH_DTYPE = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
_PREC = {"fp32": "ieee", "tf32": "tf32", "bf16": "ieee"}
_LAUNCH_OPTIONS = ("num_warps", "num_stages")


@dataclass(frozen=True)
class Job:
    kernel: str
    body: str  # which op loop launches it: fwd, fwd_save, bwd, bwd_ps
    shape: str  # shape class
    B: int
    D: int
    H: int
    cfg: launch.Cfg
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
    ir: dict = field(default_factory=dict)  # what ir_check reads: dots, MMA and cp.async counts


def plan_kind(dtype: str) -> str:
    """launch.plan's ``prec`` for a dtype name: "bf16", else the fp32 dots' precision."""
    return "bf16" if dtype == "bf16" else _PREC[dtype]


# -- enumeration ---------------------------------------------------------------------------
def cfg_cases(shape: str, arch: int) -> dict[launch.Cfg, tuple[int, int, int]]:
    """For each configuration the dispatcher can pick for ``arch``: a (B, D, H) of this shape
    class for which launch.cfg_for picks it (the first candidate batch size that does)."""
    spec = SHAPES[shape]
    D, H = spec["D"], spec["H"]
    found: dict = {}
    for B in spec["batches"]:
        found.setdefault(launch.cfg_for(B, arch), (B, D, H))
    missing = [c for c in launch.cfg_choices(arch) if c not in found]
    if missing:
        raise RuntimeError(f"no {shape} batch size in aot.SHAPES makes cfg_for pick {missing}")
    return {c: found[c] for c in launch.cfg_choices(arch)}


def _bodies(dtype: str) -> tuple[str, ...]:
    """fp32 saves no extra state (its output is the state): fwd_save compiles as fwd."""
    return BODIES if dtype == "bf16" else tuple(b for b in BODIES if b != "fwd_save")


def jobs(archs=ARCHS, dtypes=DTYPES, shapes=tuple(SHAPES)) -> list[Job]:
    """The whole matrix: every launched kernel x configuration x dtype x arch x shape."""
    out = []
    for shape in shapes:
        for arch in archs:
            for cfg, (B, D, H) in cfg_cases(shape, arch).items():
                for dtype in dtypes:
                    for body in _bodies(dtype):
                        for name in dict.fromkeys(
                            n for n, _, _ in record(body, B, D, H, dtype, cfg=cfg)
                        ):
                            out.append(Job(name, body, shape, B, D, H, cfg, dtype, arch))
    return out


def ci_jobs() -> list[Job]:
    """What tests/surnn/test_triton_aot.py compiles on every CI run (17 compiles): on sm_90 with
    the aligned shapes, the tensor-core kernels of every configuration (bf16 forward with
    saving, TF32 forward, bf16 and TF32 backward); at the largest tiles, the IEEE fp32 kernels,
    the per-sample backward and sm_80's bf16 kernels. SURNN_AOT_FULL=1 compiles the whole
    matrix."""
    if os.environ.get("SURNN_AOT_FULL", "") not in ("", "0"):
        return jobs()

    def wanted(j: Job) -> bool:
        big = j.cfg == max(launch.cfg_choices(j.arch))
        if j.arch == 90 and j.body in ({"bf16": "fwd_save"}.get(j.dtype, "fwd"), "bwd"):
            return j.dtype != "fp32" or big
        if not big:
            return False
        if j.arch == 90:
            return j.dtype == "bf16" and j.body == "bwd_ps"
        return j.dtype == "bf16" and j.body in ("fwd_save", "bwd")

    return [j for j in jobs(shapes=("aligned",)) if wanted(j)]


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


def record(
    body: str, B: int, D: int, H: int, dtype: str, T: int = 1, cfg: launch.Cfg | None = None
):
    """The launches of one op loop for these sizes, on meta tensors (nothing runs); ``cfg``
    replaces the configuration launch.cfg_for picks (to compile one the table lacks)."""
    from surnn.ops.triton import loops

    dt, m, prec = _TORCH_DTYPE[dtype], "meta", _PREC[dtype]

    def e(*shape, dtype=dt):
        return torch.empty(*shape, device=m, dtype=dtype)

    x, h0, w_ih, w_hh, b = e(B, T, D), e(B, H), e(3 * H, D), e(3 * H, H), e(3 * H)
    gshape = (B, T, H) if body == "bwd_ps" else (T, H)
    g, act, lengths = e(*gshape), e(*gshape, dtype=torch.uint8), e(B, dtype=torch.int64)

    def meta_alloc(shape, dtype, dev):
        return torch.empty(shape, dtype=dtype, device=m)

    rec = _Recorder()
    if body in ("fwd", "fwd_save"):
        loop = loops.Fwd(x, h0, w_ih, w_hh, b, b, g, act, lengths, body == "fwd_save", prec)
    else:
        out, plane = e(B, T, H), e(B, T, H, dtype=torch.float32)
        loop = loops.Bwd(out, h0, x, h0, w_ih, w_hh, b, b, g, act, lengths, out, plane, prec)
    if cfg is not None and cfg != loop.lp.cfg:  # (on meta tensors the op plans for sm_90)
        kind = plan_kind(dtype)
        loop.lp = launch.Launch(
            cfg,
            launch.block_k_for(cfg, kind),
            launch.split_max(H, cfg, kind),
            loop.lp.chunk,
            loop.lp.n_sm,
            launch.cdiv(B, cfg.block_b),
            launch.cdiv(H, cfg.block_h),
        )
    loop.launches(rec, loop.alloc(meta_alloc), 1)
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
    bound.update({k: v for k, v in kwargs.items() if k not in _LAUNCH_OPTIONS})
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
        from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "k.ptx"
            p.write_text(ptx)
            r = subprocess.run(
                [
                    get_ptxas(arch).path,
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
            r
            for r in record(job.body, job.B, job.D, job.H, job.dtype, cfg=job.cfg)
            if r[0] == job.kernel
        ]
        sig, constexprs, attrs = specialise(fn, args, kw)
        src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
        buf = io.StringIO()
        opts = {k: v for k, v in kw.items() if k in _LAUNCH_OPTIONS}
        with contextlib.redirect_stdout(buf):
            ck = triton.compile(src, target=GPUTarget("cuda", job.arch, 32), options=opts)
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
            ir=ir_scan(ck.asm["ttgir"], ck.asm["ptx"]),
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


_MMA_LAYOUT = re.compile(
    r"#(mma\d*) = #ttg\.nvidia_mma<\{versionMajor = (\d+), versionMinor = \d+, "
    r"warpsPerCTA = \[(\d+), (\d+)\], instrShape = \[([\d, ]+)\]"
)
_DOT = re.compile(
    r"(tt\.dot|ttng\.warp_group_dot) .*?: (?:tensor|!ttg\.memdesc)<(\d+)x(\d+)x(\w+)"
    r".*-> tensor<(\d+)x(\d+)xf32, #(\w+)>"
)
_PTX_MMA = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\.")
_PTX_CP_ASYNC = re.compile(r"\bcp\.async\.c[ag]\.shared\.global")


def ir_scan(ttgir: str, ptx: str) -> dict:
    """The dots of a compiled kernel (TTGIR: shape, element type, layout, and for tensor-core
    layouts the MMA instructions each warp issues per dot and the ideal count) and the PTX's
    MMA and cp.async instruction counts."""
    layouts = {
        m[1]: dict(
            version=int(m[2]), warps=[int(m[3]), int(m[4])], instr=[int(v) for v in m[5].split(",")]
        )
        for m in _MMA_LAYOUT.finditer(ttgir)
    }
    dots = []
    for m in _DOT.finditer(ttgir):
        M, K, elt, N, layout = int(m[2]), int(m[3]), m[4], int(m[6]), m[7]
        d = dict(M=M, N=N, K=K, elt=elt, layout=layout, tensor_core=layout in layouts)
        if d["tensor_core"]:
            lay = layouts[layout]
            im, inn = lay["instr"][0], lay["instr"][1]
            ik = 8 if elt == "f32" else 16
            wm, wn = lay["warps"]
            d.update(
                version=lay["version"],
                warps=lay["warps"],
                instr=[im, inn, ik],
                per_warp=math.ceil(M / (im * wm)) * math.ceil(N / (inn * wn)) * (K // ik),
                ideal=M * N * K / (im * inn * ik) / (wm * wn),
            )
        dots.append(d)
    return dict(
        dots=dots, ptx_mma=len(_PTX_MMA.findall(ptx)), ptx_cp_async=len(_PTX_CP_ASYNC.findall(ptx))
    )


def ir_check(r: Result) -> list[str]:
    """What is wrong with a compiled kernel (empty: nothing): spills, an MMA repeated by
    warps that overlap, a tensor-core dot on FMA (or an IEEE dot on tensor cores), a PTX MMA
    count other than the dots', no asynchronous copies."""
    if not r.ok:
        return [f"does not compile: {r.error.splitlines()[0] if r.error else '?'}"]
    bad = []
    if r.spill_stores or r.spill_loads:
        bad.append(f"spills {r.spill_stores}/{r.spill_loads} B per thread (stores/loads)")
    dots = r.ir.get("dots", [])
    if not dots:
        bad.append("no dot found in the TTGIR")
    ieee = r.job.dtype == "fp32"
    for d in dots:
        shape = f"{d['M']}x{d['N']}x{d['K']} {d['elt']}"
        if ieee and d["tensor_core"]:
            bad.append(f"IEEE dot {shape} on tensor cores")
        elif not ieee and not d["tensor_core"]:
            bad.append(f"dot {shape} on FMA, not tensor cores ({d['layout']})")
        elif d["tensor_core"] and d["per_warp"] > d["ideal"]:
            bad.append(
                f"dot {shape}: warps {d['warps']} x instruction {d['instr']} repeat MMAs: "
                f"{d['per_warp']} per warp where {d['ideal']:g} would do"
            )
    want = sum(d.get("per_warp", 0) for d in dots)
    if r.ir.get("ptx_mma") != want:
        bad.append(f"PTX has {r.ir.get('ptx_mma')} MMA instructions, the dots need {want}")
    if dots and not r.ir.get("ptx_cp_async"):
        bad.append("no asynchronous copies (cp.async) in the PTX")
    return bad


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
