"""Selective-update GRU kernels behind one entry point.

Implementations share one semantics (see ``reference.py``): ``reference`` (autograd
loop, the oracle), ``cpu`` (eager PyTorch with a hand-written backward, only active rows
computed), ``compiled`` (a C++ extension running the whole time loop, only active
neurons computed, built on first use; ``compiled.py``) and ``triton`` (GPU kernels
registered with torch.library). ``auto`` picks ``triton`` for CUDA tensors, else
``compiled`` when it builds/loads (fp32/fp64), else ``cpu``. Where the compiled kernel
cannot be built (no compiler, no ninja) ``compiled`` and ``auto`` run ``cpu`` after one
warning.
"""

from __future__ import annotations

import os
import warnings

import torch

from surnn.errors import ConfigError
from surnn.ops import compiled
from surnn.ops.cpu import su_gru_cpu
from surnn.ops.reference import su_gru_reference

IMPLS = ("auto", "reference", "cpu", "compiled", "triton")
# ``auto`` on CPU runs the compiled kernel while at most this fraction of the [T, H]
# updates is computed, and the eager cpu path (MKL GEMMs over contiguous rows) above it:
# measured crossover, scripts/bench_surnn.py --suite targets (setting "crossover").
AUTO_MAX_ACTIVE = 0.5
# auto on CPU runs the eager path until the compiled kernel has run on a quiet machine and
# an intermittent std::bad_alloc seen once under load is explained; impl=compiled, or
# SURNN_AUTO_COMPILED=1 (auto then picks it), opts in.
AUTO_COMPILED = os.environ.get("SURNN_AUTO_COMPILED", "") not in ("", "0")
_WARNED: set = set()


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The implementation ``impl`` runs on ``device`` (``auto`` -> by device). ``compiled``
    (and ``auto`` on CPU) becomes ``cpu`` where the extension is unavailable (one warning,
    from ``compiled.load``) or the dtype is not fp32/fp64."""
    if impl not in IMPLS:
        raise ConfigError(f"surnn impl={impl!r}: expected one of {', '.join(IMPLS)}")
    if impl == "auto":
        if device.type == "cuda":
            return "triton"
        if not AUTO_COMPILED:
            return "cpu"
        impl = "compiled"
    if impl == "compiled":
        ok_dtype = dtype is None or dtype in (torch.float32, torch.float64)
        if device.type != "cpu" or not ok_dtype:
            return "cpu"
        return "compiled" if compiled.available() else "cpu"
    return impl


def su_gru(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    g: torch.Tensor,
    active: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the selective-update GRU over ``x: [B, T, D]`` from ``h0: [B, H]`` with gate
    ``g: [T, H]`` (time-only) or ``[B, T, H]`` (per sample). ``active`` (bool, like g)
    marks where f is computed (default: where g != 0); ``lengths`` [B] closes padding
    steps. Returns ``(out [B, T, H], h_T [B, H])``."""
    which = resolve_impl(impl, x.device, x.dtype)
    if which == "compiled" and (x.shape[0] == 0 or x.shape[1] == 0):
        which = "reference"  # nothing to run: the oracle handles empty shapes
    if which == "reference":
        return su_gru_reference(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    if which == "triton":
        from surnn.ops.triton import su_gru_triton

        return su_gru_triton(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    if which == "compiled":
        limit = AUTO_MAX_ACTIVE if impl == "auto" else None
        res = compiled.su_gru_compiled(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, limit)
        if res is not None:
            return res
        return su_gru_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)  # dense: MKL
    # Explicit 'compiled' with a dtype it does not run (it loads: no build warning came).
    cpu = x.device.type == "cpu"
    if impl == "compiled" and cpu and "dtype" not in _WARNED and compiled.available():
        _WARNED.add("dtype")
        warnings.warn(
            f"surnn impl='compiled' runs fp32/fp64; {x.dtype} runs on the eager 'cpu' path",
            RuntimeWarning,
            stacklevel=2,
        )
    return su_gru_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
