"""The oracle: a plain autograd loop of the selective-update GRU, any dtype.

GRU in the torch.nn.GRU convention (gates r, z, n in that order):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    f = (1 - z) * n + z * h
    h_t = h_{t-1} + g_t * (f - h_{t-1})
A closed neuron (g = 0) keeps its state exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gru_cell(x_proj: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None):
    """f(h, x) given the input projection ``x_proj = W_ih x + b_ih`` ([B, 3H])."""
    gh = F.linear(h, w_hh, b_hh)
    xr, xz, xn = x_proj.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def su_gru_reference(x, h0, w_ih, w_hh, b_ih, b_hh, g):
    """x: [B, T, D], h0: [B, H], g: [T, H] or [B, T, H] -> (out [B, T, H], h_T [B, H])."""
    x_proj = F.linear(x, w_ih, b_ih)  # [B, T, 3H]
    h = h0
    outs = []
    for t in range(x.shape[1]):
        gt = g[t] if g.dim() == 2 else g[:, t]
        f = gru_cell(x_proj[:, t], h, w_hh, b_hh)
        h = h + gt * (f - h)
        outs.append(h)
    out = torch.stack(outs, 1) if outs else x.new_zeros(x.shape[0], 0, h0.shape[-1])
    return out, h
