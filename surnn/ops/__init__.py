"""Selective-update GRU kernels behind one entry point.

Implementations share one semantics (see ``reference.py``): ``reference`` (autograd
loop, the oracle), ``cpu`` (eager PyTorch with a hand-written backward, only active rows
computed), ``compiled`` (a C++ extension running the whole time loop, only active
neurons computed, built on first use; ``compiled.py``) and ``triton`` (GPU kernels
registered with torch.library). ``auto`` picks ``triton`` for CUDA tensors, else
``compiled`` when it builds/loads (fp32/fp64), else ``cpu``. Where the compiled kernel
cannot be built (no compiler, no ninja) ``compiled`` and ``auto`` run ``cpu`` after one
warning. Lengths that close no step (a batch of one, or no padding) are dropped before
any implementation runs: the unpadded paths are cheaper.

``update_rates`` gives the rates a layer reports for one gate call, with the same
shortcut, and a time-only gate's table view (served at inference) gets its rates
computed once.
"""

from __future__ import annotations

import os
import warnings

import torch

from surnn.errors import ConfigError
from surnn.ops import compiled, step_tables
from surnn.ops.cpu import su_gru_cpu
from surnn.ops.reference import su_gru_reference
from surnn.utils import closes_nothing, valid_mask

IMPLS = ("auto", "reference", "cpu", "compiled", "triton")
# auto on CPU runs the compiled kernel (it loads or builds; else the eager path after one
# warning): it beats the eager path at every update rate, every neuron open included,
# except a training call computing every update of a layer wider than AUTO_DENSE_GRAD_MAX_H
# (the straight-through surrogate's dense training), where the eager path's GEMMs win
# (results/bench/surnn_cpu_targets_crossover.json, training with every update computed:
# H=512 0.64x, H=256 0.92x, H=128 2.12x, H=64 4.24x).
AUTO_DENSE_GRAD_MAX_H = 128
# SURNN_AUTO_COMPILED=0 makes auto run the eager path on CPU: a committed result that
# records no ``kernel`` ran on that path, and scripts/check_results.py reruns it that way.
AUTO_COMPILED = os.environ.get("SURNN_AUTO_COMPILED", "1") not in ("", "0")
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
    h0: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    g: torch.Tensor,
    active: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the selective-update GRU over ``x: [B, T, D]`` from ``h0: [B, H]`` (None:
    zeros) with gate ``g: [T, H]`` (time-only) or ``[B, T, H]`` (per sample). ``active``
    (bool, like g) marks where f is computed (default: where g != 0); ``lengths`` [B]
    closes padding steps. Returns ``(out [B, T, H], h_T [B, H])``."""
    if closes_nothing(lengths, x.shape[1]):
        lengths = None
    which = resolve_impl(impl, x.device, x.dtype)
    if which == "compiled" and (x.shape[0] == 0 or x.shape[1] == 0):
        which = "reference"  # nothing to run: the oracle handles empty shapes
    if which == "compiled":  # it starts from zeros itself where h0 is None
        limit = AUTO_DENSE_GRAD_MAX_H if impl == "auto" else None
        res = compiled.su_gru_compiled(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, limit)
        if res is not None:
            return res
    if h0 is None:
        h0 = x.new_zeros(x.shape[0], w_hh.shape[1])
    if which == "reference":
        return su_gru_reference(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    if which == "triton":
        from surnn.ops.triton import su_gru_triton

        return su_gru_triton(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    if which == "compiled":  # a wide layer's dense training: the eager path's GEMMs (MKL)
        return su_gru_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
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


def update_rates(
    g: torch.Tensor, active: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rates of one gate call over the valid (sequence, step, neuron) positions, as
    0-d tensors: the mean of ``g`` (with its gradient, for a rate penalty) and the
    fraction of updates computed (``active``). ``lengths`` [B] close the padding steps."""
    T = g.shape[-2]
    if closes_nothing(lengths, T):
        lengths = None
    if lengths is None:  # a served table view's rates are computed once (not when tracing)
        served = None if torch.compiler.is_compiling() else step_tables.served_rates(g)
        if served is not None:
            return served
        rate = g.float().mean() if g.numel() else g.new_zeros((), dtype=torch.float32)
        return rate, active.float().mean()
    lengths = lengths.to(g.device)
    counts = (torch.arange(T, device=g.device)[:, None] < lengths[None, :]).sum(1)
    n = (counts.sum() * g.shape[-1]).clamp(min=1)
    if g.dim() == 2:  # time-only: step t counts once per sequence still running
        w = counts.to(torch.float32)[:, None]
    else:  # per sample [B, T, H]
        w = valid_mask(lengths, T).float()[..., None]
    return (g.float() * w).sum() / n, (active.float() * w).sum() / n
