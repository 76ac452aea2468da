"""torch.library registration of the Triton selective-update GRU (see kernels.py).

Forward: one kernel launch per step. Backward: per step a pointwise kernel and a kernel
that propagates dL/dh through the active neuron blocks only; weight and input gradients
are then a few large dense GEMMs (cuBLAS) over the stored pre-activation gradients.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from surnn.ops.schedule import compute_mask
from surnn.utils import valid_mask

_BLOCK_H = 32


def _kernels():
    from surnn.ops.triton import kernels  # imported late: TRITON_INTERPRET is read then

    return kernels


def _cfg(B: int, D: int, H: int) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_H, BLOCK_K). Small tiles: a step has only B*H outputs, so more
    programs (parallelism across SMs) matter more than per-program efficiency. Untuned
    (no GPU was available when this was written); scripts/gpu_check.sh measures it."""
    return (16 if B <= 16 else 32), _BLOCK_H, 32


def _order(active: torch.Tensor, H: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step, the neurons with the active ones first (int32 [T, H], a permutation of
    0..H-1 per row, stable), and how many are active ([T] int32). Per-sample masks count a
    neuron active when any sequence needs it."""
    a = active.any(0) if active.dim() == 3 else active
    a = a.reshape(T, H)
    order = torch.sort((~a).to(torch.int8), dim=1, stable=True).indices
    return order.to(torch.int32).contiguous(), a.sum(1).to(torch.int32).contiguous()


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _bstride(t: torch.Tensor) -> int:
    return t.shape[-2] * t.shape[-1] if t.dim() == 3 else 0


@torch.library.custom_op("surnn::su_gru_fwd", mutates_args=())
def su_gru_fwd(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    g: torch.Tensor,
    active: torch.Tensor,
    lengths: torch.Tensor,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B, T, H], h_T [B, H], saved fp32 [5, B, T, H] (r, z, n, hn, h_prev) or [0])."""
    k = _kernels()
    B, T, D = x.shape
    H = h0.shape[-1]
    x, w_ih, w_hh = x.contiguous(), w_ih.contiguous(), w_hh.contiguous()
    g, act = g.contiguous(), active.to(torch.uint8).contiguous()
    out = x.new_empty(B, T, H)
    hs = x.new_empty(2, B, H, dtype=torch.float32)
    hs[0] = h0
    sv = x.new_empty(5, B, T, H, dtype=torch.float32) if save else x.new_empty(0)
    order, cnt = _order(active, H, T)
    bb, bh, bk = _cfg(B, D, H)
    grid = (triton_cdiv(H, bh), triton_cdiv(B, bb))
    ieee = x.dtype == torch.float32
    lens = lengths.to(device=x.device, dtype=torch.int32).contiguous()
    b_ih, b_hh = b_ih.contiguous(), b_hh.contiguous()
    planes = sv.unbind(0) if save else (sv,) * 5
    for t in range(T):
        k.fwd_step[grid](
            x, w_ih, w_hh, b_ih, b_hh, g, act, lens, order, cnt, hs, out, *planes,
            t, B, T, D, H, _bstride(g), _bstride(act),
            SAVE=save, IEEE=ieee, BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=bk,
        )  # fmt: skip
    return out, hs[T % 2].to(x.dtype, copy=True), sv


@su_gru_fwd.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, save):
    B, T, _ = x.shape
    H = h0.shape[-1]
    sv = x.new_empty(5, B, T, H, dtype=torch.float32) if save else x.new_empty(0)
    return x.new_empty(B, T, H), x.new_empty(B, H), sv


@torch.library.custom_op("surnn::su_gru_bwd", mutates_args=())
def su_gru_bwd(
    grad_out: torch.Tensor,
    grad_h: torch.Tensor,
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    g: torch.Tensor,
    active: torch.Tensor,
    lengths: torch.Tensor,
    saved: torch.Tensor,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dg) of su_gru_fwd."""
    k = _kernels()
    B, T, D = x.shape
    H = w_hh.shape[-1]
    act = active.to(torch.uint8).contiguous()
    g, w_hh = g.contiguous(), w_hh.contiguous()
    go = grad_out.contiguous()
    f32 = torch.float32
    dgx = x.new_zeros(B, T, 3 * H, dtype=f32)
    dgh = x.new_zeros(B, T, 3 * H, dtype=f32)
    dgs = x.new_zeros(B, T, H, dtype=f32)
    dh = grad_h.to(f32).clone()
    if T:
        dh += go[:, T - 1].to(f32)
    dhn = torch.empty_like(dh)
    order, cnt = _order(active, H, T)
    bb, bh, _ = _cfg(B, D, H)
    grid = (triton_cdiv(H, bh), triton_cdiv(B, bb))
    ieee = x.dtype == torch.float32
    lens = lengths.to(device=x.device, dtype=torch.int32).contiguous()
    for t in range(T - 1, -1, -1):
        k.bwd_point[grid](
            dh, dhn, *saved.unbind(0), g, act, lens, order, cnt, dgx, dgh, dgs,
            t, B, T, H, _bstride(g), _bstride(act), BLOCK_B=bb, BLOCK_H=bh,
        )  # fmt: skip
        k.bwd_matmul[grid](
            dhn, dgh, w_hh, order, cnt, go, t, B, T, H, IEEE=ieee, BLOCK_B=bb, BLOCK_H=bh
        )
        dh, dhn = dhn, dh
    gx2, gh2 = dgx.view(B * T, 3 * H), dgh.view(B * T, 3 * H)
    hprev = saved[4].reshape(B * T, H)
    dx = (gx2 @ w_ih.to(f32)).view(B, T, D).to(x.dtype)
    dw_ih = (gx2.T @ x.reshape(B * T, D).to(f32)).to(w_ih.dtype)
    dw_hh = (gh2.T @ hprev).to(w_hh.dtype)
    db_ih, db_hh = gx2.sum(0).to(w_ih.dtype), gh2.sum(0).to(w_hh.dtype)
    dg = (dgs if g.dim() == 3 else dgs.sum(0)).to(g.dtype)
    return dx, dh.to(x.dtype), dw_ih, dw_hh, db_ih, db_hh, dg


@su_gru_bwd.register_fake
def _(grad_out, grad_h, x, w_ih, w_hh, g, active, lengths, saved):
    B, T, D = x.shape
    H = w_hh.shape[-1]
    return (
        x.new_empty(B, T, D),
        x.new_empty(B, H),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        w_ih.new_empty(3 * H),
        w_hh.new_empty(3 * H),
        torch.empty_like(g),
    )


def _setup_context(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, save = inputs
    ctx.save_for_backward(x, w_ih, w_hh, g, active, lengths, output[2])


def _backward(ctx, grad_out, grad_h, _grad_saved):
    x, w_ih, w_hh, g, active, lengths, saved = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros(*x.shape[:2], w_hh.shape[-1], device=x.device, dtype=x.dtype)
    if grad_h is None:
        grad_h = torch.zeros(x.shape[0], w_hh.shape[-1], device=x.device, dtype=x.dtype)
    dx, dh0, dwi, dwh, dbi, dbh, dg = su_gru_bwd(
        grad_out, grad_h, x, w_ih, w_hh, g, active, lengths, saved
    )
    return dx, dh0, dwi, dwh, dbi, dbh, dg, None, None, None


su_gru_fwd.register_autograd(_backward, setup_context=_setup_context)


def _executed(x, g, active, lengths) -> int:
    """Executed (sequence, step, neuron) updates: active and not padding."""
    B, T = x.shape[:2]
    valid = valid_mask(lengths.to(active.device), T)
    a = active if active.dim() == 3 else active[None]
    return int((a & valid[:, :, None]).sum())


@register_flop_formula(torch.ops.surnn.su_gru_fwd, get_raw=True)
def _fwd_flops(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, save, *a, **kw) -> int:
    """2 * 3 * (D + H) FLOPs per executed update (pointwise work not counted)."""
    return 6 * (x.shape[-1] + h0.shape[-1]) * _executed(x, g, active, lengths)


@register_flop_formula(torch.ops.surnn.su_gru_bwd, get_raw=True)
def _bwd_flops(grad_out, grad_h, x, w_ih, w_hh, g, active, lengths, saved, *a, **kw) -> int:
    """Twice the forward: input and weight gradients of each executed update."""
    return 12 * (x.shape[-1] + w_hh.shape[-1]) * _executed(x, g, active, lengths)


def su_gru_triton(x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None):
    """Same semantics as ``su_gru_reference``; x on CUDA (or CPU with TRITON_INTERPRET=1)."""
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        # A custom op is not autocast-aware: run it in the autocast dtype (bf16 storage,
        # fp32 state and accumulators inside the kernels).
        dt = torch.get_autocast_dtype("cuda")
        x, h0, w_ih, w_hh = (t.to(dt) for t in (x, h0, w_ih, w_hh))
        b_ih, b_hh = (t.to(dt) if t is not None else None for t in (b_ih, b_hh))
    B, T, _ = x.shape
    H = h0.shape[-1]
    act, _ = compute_mask(g, active, lengths)
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64, device=x.device)
    zeros = x.new_zeros(3 * H)
    b_ih = b_ih if b_ih is not None else zeros
    b_hh = b_hh if b_hh is not None else zeros
    g = g.to(x.dtype)
    save = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, h0, w_ih, w_hh, b_ih, b_hh, g)
    )
    out, h, _ = su_gru_fwd(x, h0.to(x.dtype), w_ih, w_hh, b_ih, b_hh, g, act, lengths, save)
    return out, h
