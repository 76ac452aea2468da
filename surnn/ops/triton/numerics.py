"""The Triton op's numerics in plain torch: where it rounds and what it accumulates in fp32,
step by step, forward and backward. A check, not an implementation: bf16 kernels cannot run
in the Triton interpreter, so the tests run this emulation in bf16 at T=4096 against the
float64 reference (how far the op's rounding drifts over a long sequence) and in fp32 against
the interpreted kernels (that it emulates them); scripts/gpu_check.sh compares the real bf16
run with the same float64 reference and the same tolerance (``LONG_TOL``).

What the op does (loops.py, kernels.py) for storage dtype ``dt`` (bf16 or fp32):
- x, h0, weights and gate are ``dt``; the input projection x W_ih^T and the recomputed
  h_{t-1} W_hh^T are GEMMs of ``dt`` operands with fp32 results; biases are added in fp32;
- the recurrent dot reads h_{t-1} rounded to ``dt`` (the previous output), accumulates in
  fp32; the state itself stays fp32 from step to step, the output is the state rounded to
  ``dt``; the backward reads the fp32 state (saved for bf16; the output itself for fp32);
- the pre-activation gradients are stored in ``dt`` (the recurrent matmul of the backward and
  the weight-gradient GEMMs read them so), dL/dh is carried in fp32; weight gradients
  accumulate in fp32 and are rounded to the weights' dtype once; dx is a GEMM with a ``dt``
  result; the gate gradient is accumulated in fp32.
"""

from __future__ import annotations

import torch

from surnn.utils import valid_mask

# |error| / max(1, max |reference|) of a bf16 run against float64 on the same (bf16) inputs,
# values and gradients, over 4,096 steps of a contracting recurrence, that
# tests/surnn/test_triton.py checks for the emulation and scripts/gpu_check.sh for the real
# kernels (measured for the emulation: 0.003 values, 0.004 gradients).
LONG_TOL = dict(out=1e-2, grads=2e-2)


def emulate(
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None, grad_out=None, grad_h=None
):
    """(out, h_T) as the op computes them, and with ``grad_out`` / ``grad_h`` (dL/d out, dL/dh_T)
    also (dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dg). CPU tensors, dtype = x's (bf16 or fp32).
    Sums over steps (weight gradients, dx) are formed after the loop: only their order of
    addition differs from the op's chunked GEMMs."""
    dt = x.dtype
    B, T, D = x.shape
    H = h0.shape[-1]
    opened = g != 0
    gradm = opened if active is None else active.to(torch.bool)
    comp = opened | gradm
    valid = valid_mask(lengths, T) if lengths is not None else torch.ones(B, T, dtype=torch.bool)
    valid = valid.t()[:, :, None]  # [T, B, 1]

    def tm(m):  # [T, H] or [B, T, H] -> [T, B or 1, H]
        return m[:, None] if m.dim() == 2 else m.transpose(0, 1)

    upd = tm(comp) & valid  # [T, B, H]
    gmask = tm(gradm) & valid
    gf = tm(g.to(dt).float()).expand(T, B, H)
    bi = (b_ih if b_ih is not None else torch.zeros(3 * H)).float()
    bh = (b_hh if b_hh is not None else torch.zeros(3 * H)).float()
    wi, wh = w_ih.float(), w_hh.float()  # dt values, exact in fp32
    # x W_ih^T (fp32 GEMM of dt values) + b_ih + (b_hr, b_hz, 0)
    xp = (x.float() @ wi.t()).transpose(0, 1) + bi + torch.cat([bh[: 2 * H], bh.new_zeros(H)])
    bhn = bh[2 * H :]
    h = h0.float()
    a_s, r_s, z_s, n_s, hn_s, hp_s = [], [], [], [], [], []
    for t in range(T):
        a = h.to(dt).float()  # the dot reads h_{t-1} in the storage dtype
        ah = a @ wh.t()  # fp32 accumulation
        rz = torch.sigmoid(xp[t, :, : 2 * H] + ah[:, : 2 * H])
        r, z = rz[:, :H], rz[:, H:]
        hn = ah[:, 2 * H :] + bhn
        n = torch.tanh(torch.addcmul(xp[t, :, 2 * H :], r, hn))
        hp_s.append(h)
        h = torch.where(upd[t], torch.addcmul(h, gf[t], (1 - z) * (n - h)), h)
        a_s.append(a), r_s.append(r), z_s.append(z), n_s.append(n), hn_s.append(hn)
    out = torch.stack([s.to(dt) for s in hp_s[1:] + [h]], 1) if T else x.new_zeros(B, 0, H)
    if grad_out is None and grad_h is None:
        return out, h.to(dt)
    go = (grad_out.float() if grad_out is not None else torch.zeros(B, T, H)).transpose(0, 1)
    dc = grad_h.float() if grad_h is not None else torch.zeros(B, H)
    gx_s, gh_s, dg_s = [None] * T, [None] * T, [None] * T
    nxt = None  # step t+1's hidden-side gradients (dt), as fp32 [B, 3H]
    for t in range(T - 1, -1, -1):
        dlt = dc + go[t] if nxt is None else torch.addmm(dc + go[t], nxt, wh)
        r, z, n, hn, hp = r_s[t], z_s[t], n_s[t], hn_s[t], hp_s[t]
        nh = n - hp
        df = dlt * gf[t]
        dg_s[t] = torch.where(gmask[t], dlt * (1 - z) * nh, 0.0)
        u = upd[t]
        dan = torch.where(u, df * (1 - z) * (1 - n * n), 0.0)
        dar = dan * hn * r * (1 - r)
        daz = torch.where(u, -df * nh * z * (1 - z), 0.0)
        dc = torch.where(u, dlt - df * (1 - z), dlt)
        gx_s[t] = torch.cat([dar, daz, dan], -1).to(dt).float()  # stored in dt
        gh_s[t] = nxt = torch.cat([dar, daz, dan * r], -1).to(dt).float()
    dh0 = torch.addmm(dc, nxt, wh) if T else dc
    gx, ghh = torch.stack(gx_s), torch.stack(gh_s)  # [T, B, 3H]
    xs, As = x.float().transpose(0, 1), torch.stack(a_s)
    dwi = torch.einsum("tbk,tbd->kd", gx, xs)
    dwh = torch.einsum("tbk,tbd->kd", ghh, As)
    dx = (gx @ wi).to(dt).transpose(0, 1)
    dgt = torch.stack(dg_s)  # [T, B, H]
    dg = dgt.transpose(0, 1) if g.dim() == 3 else dgt.sum(1)
    grads = (
        dx,
        dh0.to(dt),
        dwi.to(w_ih.dtype),
        dwh.to(w_hh.dtype),
        gx.sum((0, 1)).to(w_ih.dtype),
        ghh.sum((0, 1)).to(w_hh.dtype),
        dg.to(g.dtype),
    )
    return out, h.to(dt), grads


def max_error(got, ref) -> float:
    """max |got - ref| / max(1, max |ref|) over every tensor of the two lists."""
    worst = 0.0
    for a, b in zip(got, ref, strict=True):
        if a.numel():
            scale = max(1.0, b.double().abs().max().item())
            worst = max(worst, (a.double() - b.double()).abs().max().item() / scale)
    return worst
