"""The oracle: a plain autograd loop of the selective-update GRU, any dtype.

GRU in the torch.nn.GRU convention (gates r, z, n in that order):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    f = (1 - z) * n + z * h
    h_t = h_{t-1} + g_t * (f - h_{t-1})
A closed neuron (g = 0) keeps its state exactly. Padding steps (``t >= lengths[b]``) are
closed for every neuron, so outputs there repeat the last valid state and ``h_T`` is the
state at each sequence's last valid step.

``active`` (same shape as ``g``, bool) marks where ``f`` is computed; the gradient to
``g`` is only defined there (zero elsewhere). Fast paths compute nothing outside it; a
bounded surrogate makes ``active`` = open or near-threshold neurons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from surnn.utils import valid_mask


def gru_cell(x_proj: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None):
    """f(h, x) given the input projection ``x_proj = W_ih x + b_ih`` ([B, 3H])."""
    gh = F.linear(h, w_hh, b_hh)
    xr, xz, xn = x_proj.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def effective_gate(
    g: torch.Tensor,
    active: torch.Tensor | None,
    lengths: torch.Tensor | None,
    B: int,
    T: int,
) -> torch.Tensor:
    """The gate actually applied: g with padding steps closed and the gradient kept only
    where ``active``. Shape [T, H] (time-only, no lengths) or [B, T, H]."""
    if active is not None:
        g = torch.where(active, g, g.detach())
    if lengths is not None:
        valid = valid_mask(lengths.to(g.device), T)
        g = (g if g.dim() == 3 else g[None]) * valid[:, :, None].to(g.dtype)
    return g


def su_gru_reference(x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None):
    """x: [B, T, D], h0: [B, H], g: [T, H] or [B, T, H] -> (out [B, T, H], h_T [B, H])."""
    B, T = x.shape[:2]
    g = effective_gate(g, active, lengths, B, T)
    x_proj = F.linear(x, w_ih, b_ih)  # [B, T, 3H]
    h = h0
    outs = []
    for t in range(T):
        gt = g[t] if g.dim() == 2 else g[:, t]
        f = gru_cell(x_proj[:, t], h, w_hh, b_hh)
        h = h + gt * (f - h)
        outs.append(h)
    out = torch.stack(outs, 1) if outs else x.new_zeros(B, 0, h0.shape[-1])
    return out, h
