"""The compiled CPU kernel (``impl="compiled"``): a C++ extension running the whole time
loop of the selective-update GRU, forward and backward, computing only the active neurons
of each step wherever they sit (``csrc/su_gru_kernels.cpp`` explains the kernel).

Built with ``torch.utils.cpp_extension.load`` (g++, OpenMP, AVX2+FMA where the CPU has
them) on first use, by ``make setup`` or when a ``SelectiveUpdateGRU`` that may run it is
made (so that no timed forward pays for the build), and cached under
``build/torch_extensions/`` of the repository (``$SURNN_EXT_DIR`` overrides). A build's
folder is named by a key of what the library depends on: the sources, the flags (which
carry the SIMD level, so another CPU builds its own), torch, Python and the compiler. A
process whose key has a library loads it directly, whichever shell, PATH or ninja it
runs with (ninja is run only to build: a ninja of another version reads the other's build
log as absent and rebuilds everything). Processes sharing the folder build one at a time
under a file lock, each build in a folder of its own, the library moved into place when
complete, so a process never loads a half-written library. Without a compiler (or
ninja), or if the build fails, ``load()`` returns None after one warning and the
dispatcher runs the eager ``cpu`` path. ``SURNN_NO_COMPILED=1`` disables the kernel.
``SURNN_COMPILED_SANITIZE=1`` builds and loads a debug variant instead, instrumented with
AddressSanitizer and UndefinedBehaviorSanitizer (its own module name and folder, ``_san``),
for Python run with ``ASAN_OPTIONS=detect_leaks=0`` and
``LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"``
(libstdc++ too, else ASan cannot intercept C++ throws: a TORCH_CHECK would crash);
``UBSAN_OPTIONS=halt_on_error=1`` makes UB fatal.

Same semantics as ``reference.py``. The kernel calls are torch.library custom ops
(``surnn::su_gru_compiled_plan``, ``_fwd`` with its autograd and ``_bwd`` for training,
``surnn::su_gru_compiled_infer`` for inference, padded batches included: the step plan
and the sweep in one C++ call) with fake (shape-only) implementations and FLOP formulas,
as the Triton op's: FlopCounterMode (the trainer's executed/dense FLOPs) counts the
updates the kernel executes, and torch.compile traces them. Imports nothing beyond torch
and the stdlib.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.flop_counter import register_flop_formula

from surnn.utils import file_lock

_SRC = Path(__file__).resolve().parent / "csrc"
_STATE: dict = {
    "tried": False,
    "ext": None,
    "error": None,
    "library": None,
    "built": False,
    "build_s": None,
}


def _simd_flags() -> list[str]:
    """AVX2+FMA when this CPU has both (else the compiler's baseline, still correct)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in info.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= flags else []


def _sanitize() -> bool:
    """SURNN_COMPILED_SANITIZE=1: the ASan+UBSan debug build (see the module docstring)."""
    return os.environ.get("SURNN_COMPILED_SANITIZE", "") not in ("", "0")


def build_dir() -> Path:
    """Where the extension is built and cached."""
    env = os.environ.get("SURNN_EXT_DIR")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists() and os.access(root, os.W_OK):
        return root / "build" / "torch_extensions"
    return Path.home() / ".cache" / "surnn_torch_extensions"


def _warn(msg: str) -> None:
    warnings.warn(
        f"surnn: the compiled CPU kernel is unavailable ({msg}); the eager 'cpu' path runs "
        "instead (install g++ and `pip install ninja`, then rerun)",
        RuntimeWarning,
        stacklevel=3,
    )


def build_key(name: str, cflags: list[str], ldflags: list[str], cxx: str) -> str:
    """What a built library depends on, hashed: every file of csrc/, the module name and
    flags, torch's and Python's versions and ABI, and the compiler (its resolved path,
    size and modification time). Not ninja, PATH or the shell."""
    h = hashlib.sha256()
    compiler = Path(shutil.which(cxx) or cxx).resolve()
    st = compiler.stat() if compiler.exists() else None
    facts = [
        name,
        *cflags,
        "--",
        *ldflags,
        torch.__version__,
        str(torch.version.git_version),
        sys.version,
        str(sysconfig.get_config_var("EXT_SUFFIX")),
        str(compiler),
        f"{st.st_size}:{st.st_mtime_ns}" if st else "",
    ]
    for fact in facts:
        h.update(fact.encode() + b"\0")
    for src in sorted(_SRC.iterdir()):
        if src.is_file():
            h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def library(where: Path, name: str, build: Callable[[Path], ModuleType | None]):
    """``(path of where/<name>.so, module or None, built)``: the library of one key.
    Present: nothing runs. Missing: under a lock on ``where``.lock, ``build(tmp)`` builds
    ``<name>.so`` in a fresh folder beside ``where`` (returning the module if it loaded
    it), which is then moved into place; a process that waited on the lock finds it
    built. A failed build raises and leaves nothing behind."""
    so = where / f"{name}.so"
    if so.exists():
        return so, None, False
    where.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(where.parent / f"{where.name}.lock"):
        if so.exists():  # built by another process while this one waited
            return so, None, False
        tmp = Path(tempfile.mkdtemp(prefix=f"{where.name}.build-", dir=where.parent))
        try:
            module = build(tmp)
            where.mkdir(exist_ok=True)
            os.replace(tmp / f"{name}.so", so)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return so, module, True


def _import(name: str, so: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(verbose: bool = False):
    """The extension module, built on first call (cached on disk), or None (one warning)."""
    if _STATE["tried"]:
        return _STATE["ext"]
    _STATE["tried"] = True
    if os.environ.get("SURNN_NO_COMPILED", "") not in ("", "0"):
        _STATE["error"] = "disabled by SURNN_NO_COMPILED"
        return None
    cxx = os.environ.get("CXX", "c++")
    error = None
    if shutil.which(cxx) is None:
        error = f"no C++ compiler: {cxx!r} not found on PATH"
    elif _sanitize() and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        # An ASan library loaded into an uninstrumented python aborts the process.
        error = "SURNN_COMPILED_SANITIZE=1 needs LD_PRELOAD=$(gcc -print-file-name=libasan.so)"
    if error is None:
        simd = _simd_flags()
        name = "surnn_su_gru" + ("_avx2" if simd else "")
        cflags, ldflags = ["-O3", "-fopenmp", *simd], ["-fopenmp"]
        if _sanitize():
            name += "_san"
            san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
            cflags, ldflags = ["-O1", "-fopenmp", *simd, *san], ["-fopenmp", san[0]]
        where = build_dir() / f"{name}-{build_key(name, cflags, ldflags, cxx)}"

        def build(tmp: Path) -> ModuleType:
            from torch.utils import cpp_extension

            if not cpp_extension.is_ninja_available():
                raise RuntimeError("ninja is missing (`pip install ninja`)")
            print(
                f"surnn: building the compiled CPU kernel in {where} (one time; about a "
                "minute on 2 cores)...",
                file=sys.stderr,
                flush=True,
            )
            return cpp_extension.load(
                name=name,
                sources=[str(_SRC / "su_gru_bind.cpp"), str(_SRC / "su_gru_kernels.cpp")],
                extra_cflags=cflags,
                extra_ldflags=ldflags,
                build_directory=str(tmp),
                verbose=verbose,
            )

        try:
            t0 = time.perf_counter()
            so, ext, built = library(where, name, build)
            ext = ext or _import(name, so)
            _STATE.update(ext=ext, library=so, built=built, build_s=time.perf_counter() - t0)
            if built:
                print(f"surnn: built in {_STATE['build_s']:.0f} s", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - any build failure means: run the eager path
            lines = str(e).strip().splitlines()
            error = f"build failed: {type(e).__name__}: {lines[-1] if lines else ''}"
            if "ninja is missing" in str(e):
                error = "ninja is missing (`pip install ninja`)"
    if error is not None:
        _STATE["error"] = error
        _warn(error)
    return _STATE["ext"]


def available() -> bool:
    """True when the extension is built (or builds now) and loads."""
    return load() is not None


def supports(x: torch.Tensor) -> bool:
    """Tensors the kernel runs: CPU, float32 or float64."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


# ------------------------------------------------------------------ the ops
# Each kernel call is a torch.library custom op with a fake (shape-only) implementation,
# as the Triton op's: FlopCounterMode counts them through their FLOP formulas, and
# torch.compile traces them. The training forward's autograd is registered on the op.


@torch.library.custom_op("surnn::su_gru_compiled_plan", mutates_args=())
def _plan_op(
    g: torch.Tensor, active: torch.Tensor | None, lengths: torch.Tensor | None, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step plan: the neurons to compute at each step (active or open; for per-sample
    gates the union over the running samples) as a flat index list ``idx`` int32 [nnz]
    with offsets ``off`` int64 [T+1], the running samples per step ``bs`` int32 [T], and
    the rows of the batch in length order ``perm`` int32 [B] (longest first; empty without
    lengths): the kernels deal the samples to the threads in that order and read and write
    the batch in the caller's order (sorted copies of x, out and their gradients cost ~20%
    of a padded training step at B=64, T=150, H=64). One pass over the mask in C++ (the
    equivalent ATen ops cost ~0.6 ms at T=784, H=256, a tenth of a sparse B=1 sequence)."""
    return _plan(g, active, lengths, batch)


def _plan(g, active, lengths, batch):
    gd = (g if g.is_floating_point() else g.float()).contiguous()
    empty = torch.empty(0)
    act = empty if active is None else active.to(torch.bool).contiguous()
    lens = empty.long() if lengths is None else lengths.to("cpu", torch.long).contiguous()
    idx, off, bs, perm = _STATE["ext"].plan(gd, act, lens, batch)
    return idx, off, bs, perm


@_plan_op.register_fake
def _(g, active, lengths, batch):
    T = g.shape[-2]
    nnz = torch.library.get_ctx().new_dynamic_size()
    i32 = torch.int32
    perm = g.new_empty(batch if lengths is not None else 0, dtype=i32)
    return (
        g.new_empty(nnz, dtype=i32),
        g.new_empty(T + 1, dtype=torch.int64),
        g.new_empty(T, dtype=i32),
        perm,
    )


@torch.library.custom_op("surnn::su_gru_compiled_fwd", mutates_args=())
def _fwd_op(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    g: torch.Tensor,
    active: torch.Tensor | None,
    idx: torch.Tensor,
    off: torch.Tensor,
    bs: torch.Tensor,
    perm: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B,T,H], h_T [B,H], saved [nnz,4,B]): the whole forward sweep in C++ on
    contiguous inputs of one dtype, the batch in the caller's order (perm: its rows in
    length order, or empty), on torch's thread count. ``active`` is used by the backward
    only (the gate's gradient is masked by it)."""
    nthreads = torch.get_num_threads()
    out, saved = _STATE["ext"].forward(
        x, h0, w_ih, w_hh, b_ih, b_hh, g, idx, off, bs, perm, True, nthreads
    )
    return out, out[:, -1].clone(), saved


@_fwd_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, idx, off, bs, perm):
    B, T, _ = x.shape
    H = h0.shape[-1]
    return x.new_empty(B, T, H), x.new_empty(B, H), x.new_empty(idx.shape[0], 4, B)


@torch.library.custom_op("surnn::su_gru_compiled_bwd", mutates_args=())
def _bwd_op(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    g: torch.Tensor,
    idx: torch.Tensor,
    off: torch.Tensor,
    bs: torch.Tensor,
    perm: torch.Tensor,
    out: torch.Tensor,
    saved: torch.Tensor,
    gout: torch.Tensor,
    grad_h: torch.Tensor,
    need_dx: bool,
    need_w: bool,
    need_dg: bool,
) -> tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
]:
    """(dx, dW_ih, dW_hh, db_ih, db_hh, dg at the plan's entries (time-only gate: [nnz];
    per sample: [nnz, B]), dh0): the whole reverse sweep in C++ (per-thread weight
    gradients summed here). A gradient not asked for is empty."""
    nthreads = torch.get_num_threads()
    dh = grad_h.clone()  # the kernel turns dL/dh_T into dL/dh0 in place
    res = _STATE["ext"].backward(
        x,
        h0,
        w_ih,
        w_hh,
        g,
        idx,
        off,
        bs,
        perm,
        out,
        saved,
        gout,
        dh,
        need_dx,
        need_w,
        need_dg,
        nthreads,
    )
    dx, dwi, dwh, dbi, dbh, dgp, dgs = res
    if need_w:
        dwi, dwh = dwi.sum(0), dwh.sum(0)
    if need_dg and g.dim() == 2:
        dgp = dgp.sum(0)
    return dx, dwi, dwh, dbi.sum(0), dbh.sum(0), dgp, dgs, dh


@_bwd_op.register_fake
def _(x, h0, w_ih, w_hh, g, idx, off, bs, perm, out, saved, gout, grad_h, *needs):
    need_dx, need_w, need_dg = needs
    B, H = h0.shape
    nnz = idx.shape[0]
    per_sample = g.dim() == 3
    return (
        x.new_empty(x.shape if need_dx else (0,)),
        x.new_empty(w_ih.shape if need_w else (0,)),
        x.new_empty(w_hh.shape if need_w else (0,)),
        x.new_empty(3 * H),
        x.new_empty(3 * H),
        x.new_empty((nnz,) if need_dg and not per_sample else (0,)),
        x.new_empty((nnz, B) if need_dg and per_sample else (0,)),
        x.new_empty(B, H),
    )


def _setup_context(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active, idx, off, bs, perm = inputs
    ctx.save_for_backward(x, h0, w_ih, w_hh, g, active, idx, off, bs, perm, *output)


def _backward(ctx, grad_out, grad_h, _grad_saved):
    x, h0, w_ih, w_hh, g, active, idx, off, bs, perm, out, _, saved = ctx.saved_tensors
    need = ctx.needs_input_grad
    gout = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
    gh = torch.zeros_like(h0) if grad_h is None else grad_h.contiguous()
    dx, dwi, dwh, dbi, dbh, dgp, dgs, dh0 = _bwd_op(
        x,
        h0,
        w_ih,
        w_hh,
        g,
        idx,
        off,
        bs,
        perm,
        out,
        saved,
        gout,
        gh,
        need[0],
        any(need[2:6]),
        need[6],
    )
    dg = None
    if need[6]:  # the plan's entries back into g's shape
        steps = torch.repeat_interleave(
            torch.arange(off.shape[0] - 1), off.diff(), output_size=idx.shape[0]
        )
        dg = torch.zeros_like(g)
        if g.dim() == 2:
            dg[steps, idx.long()] = dgp
        else:
            dg[:, steps, idx.long()] = dgs.T
        if active is not None:  # the gate's gradient exists only where active
            dg = dg * active
    grads = (dx, dh0, dwi, dwh, dbi, dbh, dg)
    return *(gr if n else None for gr, n in zip(grads, need)), *([None] * 5)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("surnn::su_gru_compiled_infer", mutates_args=())
def _infer_op(
    x: torch.Tensor,
    h0: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    g: torch.Tensor,
    active: torch.Tensor | None,
    lengths: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B,T,H], h_T [B,H]) without gradients: layouts, absent h0 and biases, lengths in
    any order, the step plan and the forward sweep all in one C++ call (at batch 1 the
    training path's ~15 Python and ATen steps cost as much as a sparse sweep; at B=250 its
    length-sorted copies of x and out cost a fifth of the sweep)."""
    nthreads = torch.get_num_threads()
    out, h_t = _STATE["ext"].infer(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, nthreads)
    return out, h_t


@_infer_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths):
    B, T, _ = x.shape
    H = w_hh.shape[-1]
    return x.new_empty(B, T, H), x.new_empty(B, H)


def _plain_call(tensors) -> bool:
    """True when nothing has to see the inference call as an operator: no dispatch mode
    (FlopCounterMode, fake tensors), no torch.compile trace, plain tensors or parameters.
    Then ``_infer_op``'s extension function is called directly: the custom op's dispatch
    costs ~80 us per call, ~200 us when the caches are cold (a B=1 sMNIST sequence at 17%
    updates takes ~3 ms). Uses torch's dispatch-mode stack depth where it exists; without
    it every call goes through the op."""
    if torch.compiler.is_compiling():
        return False
    depth = getattr(torch._C, "_len_torch_dispatch_stack", None)
    return (
        depth is not None
        and depth() == 0
        and all(t is None or type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)
    )


def _executed(off: torch.Tensor, bs: torch.Tensor) -> int:
    """Executed (sequence, step, neuron) updates: active neurons x running samples."""
    return int(((off[1:] - off[:-1]) * bs.to(off.dtype)).sum())


@register_flop_formula(torch.ops.surnn.su_gru_compiled_fwd, get_raw=True)
def _fwd_flops(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, idx, off, bs, *a, **kw) -> int:
    """2 * 3 * (D + H) FLOPs per executed update (pointwise work not counted)."""
    return 6 * (x.shape[-1] + h0.shape[-1]) * _executed(off, bs)


@register_flop_formula(torch.ops.surnn.su_gru_compiled_bwd, get_raw=True)
def _bwd_flops(x, h0, w_ih, w_hh, g, idx, off, bs, *a, **kw) -> int:
    """Twice the forward: input and weight gradients of each executed update."""
    return 12 * (x.shape[-1] + h0.shape[-1]) * _executed(off, bs)


@register_flop_formula(torch.ops.surnn.su_gru_compiled_infer, get_raw=True)
def _infer_flops(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, *a, **kw) -> int:
    """As the forward's: the plan counts the executed updates."""
    _, off, bs, _ = _plan(g.detach(), active, lengths, x.shape[0])
    return 6 * (x.shape[-1] + w_hh.shape[-1]) * _executed(off, bs)


def su_gru_compiled(
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None, dense_grad_max_h=None
):
    """The compiled kernel; same arguments and semantics as ``su_gru_reference``. The
    caller (``surnn.ops.su_gru``) checks ``available()`` and ``supports(x)`` first.
    Returns None (nothing run) for a call that needs gradients, computes every update and
    has more than ``dense_grad_max_h`` neurons: ``auto`` then runs the eager path, whose
    dense GEMMs are faster there."""
    B, T, _ = x.shape
    H = w_hh.shape[-1]
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh, g)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not grad:  # one C++ call, padded batches included
        args = (*tensors, active, lengths)
        if _plain_call(args):
            return _STATE["ext"].infer(*args, torch.get_num_threads())
        return _infer_op(*args)
    if h0 is None:
        h0 = x.new_zeros(B, H)
    idx, off, bs, perm = _plan_op(g.detach(), active, lengths, B)
    if dense_grad_max_h is not None and dense_grad_max_h < H and int(off[-1]) == T * H:
        return None
    zeros = x.new_zeros(3 * H)
    out, h_t, _ = _fwd_op(
        x.contiguous(),
        h0.contiguous(),
        w_ih.contiguous(),
        w_hh.contiguous(),
        (zeros if b_ih is None else b_ih).contiguous(),
        (zeros if b_hh is None else b_hh).contiguous(),
        g.to(x.dtype).contiguous(),
        None if active is None else active.detach(),
        idx,
        off,
        bs,
        perm,
    )
    return out, h_t
