"""Selective-update GRU kernels behind one entry point.

Implementations share one semantics (see ``reference.py``): ``reference`` (autograd
loop, the oracle), ``cpu`` (hand-written backward, only active rows computed) and
``triton`` (GPU kernels registered with torch.library). ``auto`` picks ``triton`` for
CUDA tensors and ``cpu`` otherwise.
"""

from __future__ import annotations

import torch

from surnn.errors import ConfigError
from surnn.ops.cpu import su_gru_cpu
from surnn.ops.reference import su_gru_reference

IMPLS = ("auto", "reference", "cpu", "triton")


def resolve_impl(impl: str, device: torch.device) -> str:
    """The implementation ``impl`` names on ``device`` (``auto`` -> by device)."""
    if impl not in IMPLS:
        raise ConfigError(f"surnn impl={impl!r}: expected one of {', '.join(IMPLS)}")
    if impl == "auto":
        return "triton" if device.type == "cuda" else "cpu"
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
    which = resolve_impl(impl, x.device)
    if which == "reference":
        return su_gru_reference(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    if which == "triton":
        from surnn.ops.triton import su_gru_triton

        return su_gru_triton(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    return su_gru_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
