"""Selective-update GRU kernels behind one entry point.

Implementations share one semantics (see ``reference.py``): ``reference`` (autograd
loop, the oracle). Dispatch picks by device unless ``impl`` names one.
"""

from __future__ import annotations

import torch

from surnn.errors import ConfigError
from surnn.ops.reference import su_gru_reference

IMPLS = ("auto", "reference")


def su_gru(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    g: torch.Tensor,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the selective-update GRU over ``x: [B, T, D]`` from ``h0: [B, H]`` with gate
    ``g: [T, H]`` (time-only) or ``[B, T, H]``. Returns ``(out [B, T, H], h_T [B, H])``."""
    if impl not in IMPLS:
        raise ConfigError(f"surnn impl={impl!r}: expected one of {', '.join(IMPLS)}")
    return su_gru_reference(x, h0, w_ih, w_hh, b_ih, b_hh, g)
