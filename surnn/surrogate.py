"""The hard step of a binary gate and its surrogate gradients.

A binary gate is g = Heaviside(a) of a pre-activation a. Its derivative is zero almost
everywhere, so the backward pass uses a surrogate psi(a) in its place:

- ``ste`` (straight-through): psi = 1 everywhere, so every neuron needs the GRU update f
  while the gate is trained (dense work);
- ``triangle``: psi = max(0, 1 - |a| / w);
- ``rect``: psi = 1 for |a| < w, else 0.

The bounded ones (``triangle``, ``rect`` of half-width w) are zero for |a| >= w, so in
training only the open neurons and the closed ones within w of the threshold need f.
"""

from __future__ import annotations

import torch

from surnn.checks import one_of, positive
from surnn.errors import ConfigError

SURROGATES = ("ste", "triangle", "rect")


def surrogate_grad(a: torch.Tensor, kind: str, width: float) -> torch.Tensor:
    """psi(a): the derivative used for Heaviside(a) in the backward pass."""
    if kind == "ste":
        return torch.ones_like(a)
    if kind == "triangle":
        return (1.0 - a.abs() / width).clamp(min=0.0)
    if kind == "rect":
        return (a.abs() < width).to(a.dtype)
    raise ConfigError(f"gate surrogate={kind!r}: expected one of {', '.join(SURROGATES)}")


class Heaviside(torch.autograd.Function):
    """``Heaviside.apply(a, kind, width)``: the hard step forward, ``surrogate_grad``
    backward (its arguments unchecked: ``check_surrogate`` them first)."""

    @staticmethod
    def forward(ctx, a, kind, width):
        ctx.save_for_backward(a)
        ctx.kind, ctx.width = kind, width
        return (a > 0).to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * surrogate_grad(a, ctx.kind, ctx.width), None, None


def check_surrogate(surrogate: str, width: float) -> None:
    """The ``surrogate`` and ``width`` options of a gate (one-line errors naming the key)."""
    one_of(*SURROGATES).check("surrogate", surrogate)
    positive().check("width", width)


def heaviside(a: torch.Tensor, surrogate: str = "triangle", width: float = 1.0) -> torch.Tensor:
    """Hard step forward, surrogate gradient backward."""
    check_surrogate(surrogate, width)
    return Heaviside.apply(a, surrogate, float(width))
