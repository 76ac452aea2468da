"""A first use on a GPU checks itself: the first call of the Triton path on a device (per
process, per dtype) runs a small case through the Triton op (eagerly, and through a CUDA
graph, captured and replayed) and through the reference, values and gradients. On a mismatch
or an error the process runs the eager PyTorch path (surnn/ops/cpu.py, same semantics) for
that device and dtype, after one warning that says what failed and how to report it.

The case: 5 sequences of ragged lengths, 6 steps, D=24, H=1280 (wide enough that the steps
split their reductions on a GPU, launch.split_max, so split-K runs), a time-only gate at about
35% open with an ``active`` superset, and the same with a per-sample gate. Tolerances: fp32 (IEEE dots) 2e-4, TF32 and
bf16 (relative to the largest value of each result) 2e-2 and 5e-2. It costs well under a
second on a GPU, once per process and dtype.
"""

from __future__ import annotations

import threading
import warnings

import torch

from surnn.provenance import device_name

DEVICES = ("cuda",)  # device types checked; the tests add "cpu" (the interpreter)
CASE = dict(B=5, T=6, D=24, H=1280)
_STATE: dict = {}  # (device, dtype) -> None (passed) or why it failed, or _CHECKING
_UNSET, _CHECKING = object(), object()
_LOCK = threading.RLock()
REPORT = (
    "Please report it: run `bash scripts/gpu_check.sh` on this machine and send its JSON "
    "(results/bench/surnn_gpu_check.json) with this message."
)


def passed(device: torch.device, dtype: torch.dtype, triton_op) -> bool:
    """True when the Triton path may run on ``device`` for ``dtype`` (checked on first use,
    by running ``triton_op``, op.su_gru_triton; other threads wait for the check, the checking
    thread itself runs the Triton path)."""
    if device.type not in DEVICES:
        return True
    key = (str(device), dtype)
    st = _STATE.get(key, _UNSET)
    if st is not _UNSET and st is not _CHECKING:
        return st is None
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return True  # nothing can be checked inside a capture: the next call checks
    with _LOCK:
        st = _STATE.get(key, _UNSET)
        if st is _CHECKING:
            return True
        if st is _UNSET:
            _STATE[key] = _CHECKING
            why = _check(device, dtype, triton_op)
            _STATE[key] = why
            if why is not None:
                warnings.warn(
                    f"surnn: the Triton kernels failed their first-use check on {_name(device)} "
                    f"({dtype}): {why}. This process runs the eager PyTorch path instead (same "
                    f"results, slower). {REPORT}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return _STATE[key] is None


def reset() -> None:
    _STATE.clear()


def _name(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``: the device and, for a GPU, its name."""
    return f"{device} ({device_name(device)})" if device.type == "cuda" else str(device)


def _tolerance(dtype: torch.dtype) -> tuple[float, bool]:
    """(tolerance, relative to each result's largest value)."""
    if dtype == torch.float32:
        return (2e-4, False) if not torch.backends.cuda.matmul.allow_tf32 else (2e-2, True)
    return 5e-2, True


def case(device, dtype, per_sample: bool, seed: int = 0):
    """The check's inputs (leaf tensors with requires_grad) and the output weights."""
    B, T, D, H = CASE["B"], CASE["T"], CASE["D"], CASE["H"]
    gen = torch.Generator().manual_seed(seed)

    def rnd(*s, scale=0.4):
        return (torch.randn(*s, generator=gen) * scale).to(device, dtype).requires_grad_()

    x, h0 = rnd(B, T, D, scale=1.0), rnd(B, H, scale=1.0)
    w = [rnd(3 * H, D), rnd(3 * H, H, scale=0.4 / H**0.5 * 8), rnd(3 * H), rnd(3 * H)]
    u = torch.rand((B, T, H) if per_sample else (T, H), generator=gen)
    g = (u < 0.35).to(device, dtype).requires_grad_()
    active = (u < 0.6).to(device)
    lens = torch.tensor([T, T - 1, 1, T, 3][:B], device=device)
    wout = torch.randn(B, T, H, generator=gen).to(device, dtype)
    return x, h0, w, g, active, lens, wout


def _grads(fn, args, wout):
    x, h0, w, g, active, lens = args
    out, h = fn(x, h0, *w, g, active, lens)
    loss = (out.float() * wout.float()).sum() + (h.float() ** 2).sum()
    return [
        out.detach().float(),
        h.detach().float(),
        *[t.float() for t in torch.autograd.grad(loss, [x, h0, *w, g])],
    ]


def compare(got: list, ref: list, dtype: torch.dtype) -> str | None:
    """None when every result is within tolerance, else which one is not."""
    tol, rel = _tolerance(dtype)
    names = ["out", "h_T", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dg"]
    for name, a, b in zip(names, got, ref, strict=True):
        if not torch.isfinite(a).all():
            return f"{name} is not finite"
        err = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        scale = max(b.abs().max().item(), 1.0) if rel and b.numel() else 1.0
        if err > tol * scale:
            return f"{name} differs from the reference by {err:.3g} (tolerance {tol * scale:.3g})"
    return None


def _check(device: torch.device, dtype: torch.dtype, triton_op) -> str | None:
    """None when the Triton path agrees with the reference on the case, else why not."""
    try:
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast(device.type, enabled=False),
        ):
            return _run(device, dtype, triton_op)
    except Exception as err:  # any failure of the kernels or of the launch machinery
        return f"{type(err).__name__}: {err}"


def _run(device: torch.device, dtype: torch.dtype, su_gru_triton) -> str | None:
    from surnn.ops.reference import su_gru_reference
    from surnn.ops.triton import graphs as _graphs

    for per_sample in (False, True):
        x, h0, w, g, active, lens, wout = case(device, dtype, per_sample)
        f64 = [t.detach().double().requires_grad_() for t in (x, h0, *w, g)]
        ref = _grads(su_gru_reference, (f64[0], f64[1], f64[2:6], f64[6], active, lens), wout)
        args = (x, h0, w, g, active, lens)
        kind = "per-sample" if per_sample else "time-only"
        why = compare(_grads(lambda *a: su_gru_triton(*a, graphs=False), args, wout), ref, dtype)
        if why is not None:
            return f"{kind} gate: {why}"
        if _graphs.wanted(x, True):
            # the graph path: a key's first use runs eagerly, the second captures (checked bit
            # for bit against its eager warm-up), the third replays
            for use in range(3):
                got = _grads(lambda *a: su_gru_triton(*a, graphs=True), args, wout)
                why = compare(got, ref, dtype)
                if why is not None:
                    return f"{kind} gate, CUDA graph path, call {use + 1}: {why}"
    return None
