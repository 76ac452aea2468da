"""torch.library registration of the Triton selective-update GRU (see kernels.py).

Forward: one kernel launch per step. Backward: per step a pointwise kernel and a kernel
that propagates dL/dh through the active neuron blocks only; weight and input gradients
are then a few large dense GEMMs (cuBLAS) over the stored pre-activation gradients.
On CUDA both step loops are captured once per shape and replayed as CUDA graphs
(graphs.py; the eager launch loop is the fallback; NOT YET RUN ON A GPU). aot.py compiles
every kernel for sm_80/sm_90 without a GPU.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from surnn.ops.schedule import compute_mask
from surnn.ops.triton import graphs as _graphs
from surnn.utils import valid_mask

_BLOCK_H = 32


def _kernels():
    from surnn.ops.triton import kernels  # imported late: TRITON_INTERPRET is read then

    return kernels


# The dispatcher's choices, as data so that aot.py can enumerate them: rows of
# (largest B the row serves or None for any, (BLOCK_B, BLOCK_H, BLOCK_K)); the first row
# that serves B wins. A new branch goes here, not into _cfg, or the AOT check misses it.
_CFG_TABLE: tuple[tuple[int | None, tuple[int, int, int]], ...] = (
    (16, (16, _BLOCK_H, 32)),
    (None, (32, _BLOCK_H, 32)),
)


def _cfg(B: int, D: int, H: int) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_H, BLOCK_K). Small tiles: a step has only B*H outputs, so more
    programs (parallelism across SMs) matter more than per-program efficiency. Untuned
    (no GPU was available when this was written); scripts/gpu_check.sh measures it."""
    for max_b, cfg in _CFG_TABLE:
        if max_b is None or max_b >= B:
            return cfg
    raise AssertionError("_CFG_TABLE must end with a row for any B")


def cfg_choices() -> list[tuple[int, int, int]]:
    """Every (BLOCK_B, BLOCK_H, BLOCK_K) that _cfg can return (aot.py compiles them all)."""
    return sorted({cfg for _, cfg in _CFG_TABLE})


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


def _fwd_inputs(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths) -> dict:
    """The forward's kernel inputs (contiguous; the step order computed on the device)."""
    H = h0.shape[-1]
    order, cnt = _order(active, H, x.shape[1])
    lens = lengths.to(device=x.device, dtype=torch.int32).contiguous()
    c = torch.Tensor.contiguous
    return dict(
        x=c(x),
        h0=h0,
        w_ih=c(w_ih),
        w_hh=c(w_hh),
        b_ih=c(b_ih),
        b_hh=c(b_hh),
        g=c(g),
        act=active.to(torch.uint8).contiguous(),
        lens=lens,
        order=order,
        cnt=cnt,
    )


def _fwd_alloc(s: dict, save: bool) -> dict:
    """The forward's outputs and work buffers: out, the fp32 state ping-pong hs, saved sv."""
    x = s["x"]
    B, T, _ = x.shape
    H = s["h0"].shape[-1]
    sv = x.new_empty(5, B, T, H, dtype=torch.float32) if save else x.new_empty(0)
    return dict(out=x.new_empty(B, T, H), hs=x.new_empty(2, B, H, dtype=torch.float32), sv=sv)


def _fwd_body(k, s: dict, save: bool) -> None:
    """The forward's device work on the tensors of ``s`` (fresh ones when eager, a CUDA
    graph's static ones when graphed: graphs.py); ``k`` is the kernels module (aot.py
    passes a recorder to learn the launches' exact argument types)."""
    x = s["x"]
    B, T, D = x.shape
    H = s["h0"].shape[-1]
    s["hs"][0].copy_(s["h0"])
    bb, bh, bk = _cfg(B, D, H)
    grid = (triton_cdiv(H, bh), triton_cdiv(B, bb))
    ieee = x.dtype == torch.float32
    planes = s["sv"].unbind(0) if save else (s["sv"],) * 5
    g, act = s["g"], s["act"]
    for t in range(T):
        k.fwd_step[grid](
            x,
            s["w_ih"],
            s["w_hh"],
            s["b_ih"],
            s["b_hh"],
            g,
            act,
            s["lens"],
            s["order"],
            s["cnt"],
            s["hs"],
            s["out"],
            *planes,
            t,
            B,
            T,
            D,
            H,
            _bstride(g),
            _bstride(act),
            SAVE=save,
            IEEE=ieee,
            BLOCK_B=bb,
            BLOCK_H=bh,
            BLOCK_K=bk,
        )


def _fwd_finish(s: dict, graphed: bool):
    """(out, h_T, saved) from the forward's tensors; copies where they are a graph's."""
    x, T = s["x"], s["x"].shape[1]
    h = s["hs"][T % 2].to(x.dtype, copy=True)
    if not graphed:
        return s["out"], h, s["sv"]
    sv = s["sv"].clone() if s["sv"].numel() else x.new_empty(0)
    return s["out"].clone(), h, sv


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
    graphs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B, T, H], h_T [B, H], saved fp32 [5, B, T, H] (r, z, n, hn, h_prev) or [0]).
    ``graphs``: replay the step loop as a cached CUDA graph (graphs.py) where it can."""
    k = _kernels()
    s = _fwd_inputs(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    return _graphs.run(
        ("fwd", save),
        s,
        alloc=lambda s: _fwd_alloc(s, save),
        body=lambda s: _fwd_body(k, s, save),
        finish=_fwd_finish,
        graphs=graphs,
    )


@su_gru_fwd.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, save, graphs=False):
    B, T, _ = x.shape
    H = h0.shape[-1]
    sv = x.new_empty(5, B, T, H, dtype=torch.float32) if save else x.new_empty(0)
    return x.new_empty(B, T, H), x.new_empty(B, H), sv


def _bwd_inputs(grad_out, grad_h, x, w_ih, w_hh, g, active, lengths, saved) -> dict:
    """The backward's kernel inputs (contiguous; the step order computed on the device)."""
    B, T, _ = x.shape
    H = w_hh.shape[-1]
    order, cnt = _order(active, H, T)
    return dict(
        go=grad_out.contiguous(),
        grad_h=grad_h,
        x=x,
        w_ih=w_ih,
        w_hh=w_hh.contiguous(),
        g=g.contiguous(),
        act=active.to(torch.uint8).contiguous(),
        lens=lengths.to(device=x.device, dtype=torch.int32).contiguous(),
        saved=saved,
        order=order,
        cnt=cnt,
    )


def _bwd_alloc(s: dict) -> dict:
    """The backward's buffers: pre-activation grads dgx, dgh [B, T, 3H], gate grad dgs
    [B, T, H] (zeroed by the body: inactive tiles never write them), dL/dh ping-pong."""
    x = s["x"]
    B, T, _ = x.shape
    H = s["w_hh"].shape[-1]
    f32 = torch.float32
    e = x.new_empty
    return dict(
        dgx=e(B, T, 3 * H, dtype=f32),
        dgh=e(B, T, 3 * H, dtype=f32),
        dgs=e(B, T, H, dtype=f32),
        dh=e(B, H, dtype=f32),
        dhn=e(B, H, dtype=f32),
    )


def _bwd_body(k, s: dict) -> None:
    """The backward's step loop on the tensors of ``s`` (see _fwd_body)."""
    x = s["x"]
    B, T, D = x.shape
    H = s["w_hh"].shape[-1]
    for name in ("dgx", "dgh", "dgs"):
        s[name].zero_()
    dh, dhn = s["dh"], s["dhn"]
    dh.copy_(s["grad_h"])
    if T:
        dh.add_(s["go"][:, T - 1])  # fp32 += (exact upcast of) the output grad at T-1
    bb, bh, _ = _cfg(B, D, H)
    grid = (triton_cdiv(H, bh), triton_cdiv(B, bb))
    ieee = x.dtype == torch.float32
    g, act, lens, order, cnt = s["g"], s["act"], s["lens"], s["order"], s["cnt"]
    planes = s["saved"].unbind(0)
    for t in range(T - 1, -1, -1):
        k.bwd_point[grid](
            dh,
            dhn,
            *planes,
            g,
            act,
            lens,
            order,
            cnt,
            s["dgx"],
            s["dgh"],
            s["dgs"],
            t,
            B,
            T,
            H,
            _bstride(g),
            _bstride(act),
            BLOCK_B=bb,
            BLOCK_H=bh,
        )
        k.bwd_matmul[grid](
            dhn,
            s["dgh"],
            s["w_hh"],
            order,
            cnt,
            s["go"],
            t,
            B,
            T,
            H,
            IEEE=ieee,
            BLOCK_B=bb,
            BLOCK_H=bh,
        )
        dh, dhn = dhn, dh


def _bwd_finish(s: dict, graphed: bool):
    """(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dg): dense GEMMs over the stored grads; no
    result aliases a graph's static buffer."""
    x, w_ih, w_hh, g = s["x"], s["w_ih"], s["w_hh"], s["g"]
    B, T, D = x.shape
    H = w_hh.shape[-1]
    f32 = torch.float32
    dh = (s["dh"], s["dhn"])[T % 2]  # the loop swapped them T times
    gx2, gh2 = s["dgx"].view(B * T, 3 * H), s["dgh"].view(B * T, 3 * H)
    hprev = s["saved"][4].reshape(B * T, H)
    dx = (gx2 @ w_ih.to(f32)).view(B, T, D).to(x.dtype)
    dw_ih = (gx2.T @ x.reshape(B * T, D).to(f32)).to(w_ih.dtype)
    dw_hh = (gh2.T @ hprev).to(w_hh.dtype)
    db_ih, db_hh = gx2.sum(0).to(w_ih.dtype), gh2.sum(0).to(w_hh.dtype)
    dg = (s["dgs"] if g.dim() == 3 else s["dgs"].sum(0)).to(g.dtype, copy=graphed)
    return dx, dh.to(x.dtype, copy=graphed), dw_ih, dw_hh, db_ih, db_hh, dg


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
    graphs: bool = False,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dg) of su_gru_fwd."""
    k = _kernels()
    s = _bwd_inputs(grad_out, grad_h, x, w_ih, w_hh, g, active, lengths, saved)
    return _graphs.run(
        ("bwd",),
        s,
        alloc=_bwd_alloc,
        body=lambda s: _bwd_body(k, s),
        finish=_bwd_finish,
        graphs=graphs,
    )


@su_gru_bwd.register_fake
def _(grad_out, grad_h, x, w_ih, w_hh, g, active, lengths, saved, graphs=False):
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
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, save, *rest = inputs
    ctx.graphs = bool(rest[0]) if rest else False
    ctx.save_for_backward(x, w_ih, w_hh, g, active, lengths, output[2])


def _backward(ctx, grad_out, grad_h, _grad_saved):
    x, w_ih, w_hh, g, active, lengths, saved = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros(*x.shape[:2], w_hh.shape[-1], device=x.device, dtype=x.dtype)
    if grad_h is None:
        grad_h = torch.zeros(x.shape[0], w_hh.shape[-1], device=x.device, dtype=x.dtype)
    dx, dh0, dwi, dwh, dbi, dbh, dg = su_gru_bwd(
        grad_out, grad_h, x, w_ih, w_hh, g, active, lengths, saved, ctx.graphs
    )
    # one None per non-tensor input (lengths, save, graphs); autograd drops a trailing None
    # when the dispatcher left ``graphs`` out (it omits arguments equal to their default)
    return dx, dh0, dwi, dwh, dbi, dbh, dg, None, None, None, None


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


def su_gru_triton(x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None, graphs=None):
    """Same semantics as ``su_gru_reference``; x on CUDA (or CPU with TRITON_INTERPRET=1).
    ``graphs``: replay the step loops as cached CUDA graphs (graphs.py; not yet run on a
    GPU); None reads $SURNN_CUDA_GRAPHS (default on); the eager loop is the fallback."""
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
    graphs = _graphs.wanted(x, graphs) and T > 0
    out, h, _ = su_gru_fwd(x, h0.to(x.dtype), w_ih, w_hh, b_ih, b_hh, g, act, lengths, save, graphs)
    return out, h
