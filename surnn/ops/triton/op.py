"""torch.library registration of the Triton selective-update GRU: ``surnn::su_gru_fwd`` and
``surnn::su_gru_bwd`` with fake (meta) implementations, the autograd formula and FLOP
formulas, and ``su_gru_triton``, the entry point (kernels.py: the sequential part, loops.py:
the chunk loops a call runs, launch.py: the launch model). Without a GPU it runs under the
Triton interpreter (TRITON_INTERPRET=1), where the tests check it against the reference; its
CUDA tests run on a GPU (scripts/gpu_check.sh). ``precision`` for fp32: "ieee", "tf32" or
"tf32x3" for the in-kernel dots; None follows ``torch.backends.cuda.matmul.allow_tf32``,
which also rules the GEMMs.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from surnn.ops.triton import graphs as _graphs
from surnn.ops.triton.loops import Bwd, Fwd
from surnn.utils import valid_mask

PRECISIONS = ("ieee", "tf32", "tf32x3")


def _kernels():
    from surnn.ops.triton import kernels  # imported late: TRITON_INTERPRET is read then

    return kernels


def precision_for(dtype: torch.dtype, precision: str | None) -> str:
    """The in-kernel dot precision of an fp32 run (ignored for bf16)."""
    if precision is None:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


@torch.library.custom_op("surnn::su_gru_fwd", mutates_args=())
def su_gru_fwd(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    g: torch.Tensor,
    act: torch.Tensor,
    lengths: torch.Tensor,
    save: bool,
    graphs: bool = False,
    precision: str = "ieee",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B, T, H], h_T [B, H], the fp32 state [B, T, H] for the backward of a bf16 run
    (else [0])). ``act``: u8 mask, bit 0 computed, bit 1 gate gradient (see kernels.py).
    ``graphs``: replay the chunk's launches as a cached CUDA graph (graphs.py) where it can."""
    c = torch.Tensor.contiguous
    loop = Fwd(c(x), c(h0), c(w_ih), c(w_hh), b_ih, b_hh, c(g), c(act), lengths, save, precision)
    return _graphs.run(loop, graphs, _kernels())


@su_gru_fwd.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, save, graphs=False, precision="ieee"):
    B, T, _ = x.shape
    H = h0.shape[-1]
    keep = save and x.dtype != torch.float32
    plane = x.new_empty((B, T, H) if keep else (0,), dtype=torch.float32)
    return x.new_empty(B, T, H), x.new_empty(B, H), plane


@torch.library.custom_op("surnn::su_gru_bwd", mutates_args=())
def su_gru_bwd(
    grad_out: torch.Tensor,
    grad_h: torch.Tensor,
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    g: torch.Tensor,
    act: torch.Tensor,
    lengths: torch.Tensor,
    out: torch.Tensor,
    plane: torch.Tensor,
    graphs: bool = False,
    precision: str = "ieee",
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dg) of su_gru_fwd."""
    c = torch.Tensor.contiguous
    loop = Bwd(
        c(grad_out),
        c(grad_h),
        c(x),
        c(h0),
        c(w_ih),
        c(w_hh),
        b_ih,
        b_hh,
        c(g),
        c(act),
        lengths,
        c(out),
        c(plane),
        precision,
    )
    return _graphs.run(loop, graphs, _kernels())


@su_gru_bwd.register_fake
def _(grad_out, grad_h, x, h0, w_ih, w_hh, b_ih, b_hh, g, *_):
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
    x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, save, *rest = inputs
    ctx.graphs = bool(rest[0]) if rest else False
    ctx.precision = rest[1] if len(rest) > 1 else "ieee"
    # su_gru_bwd's tensor inputs after the two gradients, in its order
    ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, output[0], output[2])


def _backward(ctx, grad_out, grad_h, _grad_plane):
    saved = ctx.saved_tensors
    x, w_hh = saved[0], saved[3]
    if grad_out is None:
        grad_out = torch.zeros(*x.shape[:2], w_hh.shape[-1], device=x.device, dtype=x.dtype)
    if grad_h is None:
        grad_h = torch.zeros(x.shape[0], w_hh.shape[-1], device=x.device, dtype=x.dtype)
    dx, dh0, dwi, dwh, dbi, dbh, dg = su_gru_bwd(
        grad_out, grad_h, *saved, ctx.graphs, ctx.precision
    )
    # one None per non-tensor input (act, lengths, save, graphs, precision); autograd drops
    # trailing Nones the dispatcher left out (it omits arguments equal to their default)
    return dx, dh0, dwi, dwh, dbi, dbh, dg, None, None, None, None, None


su_gru_fwd.register_autograd(_backward, setup_context=_setup_context)


def _executed(x, act, lengths) -> int:
    """Executed (sequence, step, neuron) updates: computed and not padding."""
    T = x.shape[1]
    valid = valid_mask(lengths.to(act.device), T)
    a = (act & 1) != 0
    a = a if a.dim() == 3 else a[None]
    return int((a & valid[:, :, None]).sum())


@register_flop_formula(torch.ops.surnn.su_gru_fwd, get_raw=True)
def _fwd_flops(x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, save, *a, **kw) -> int:
    """2 * 3 * (D + H) FLOPs per executed update (pointwise work not counted; the input
    projection's GEMM runs dense on the GPU, counted here as the updates that use it)."""
    return 6 * (x.shape[-1] + h0.shape[-1]) * _executed(x, act, lengths)


@register_flop_formula(torch.ops.surnn.su_gru_bwd, get_raw=True)
def _bwd_flops(grad_out, grad_h, x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, *a, **kw):
    """Twice the forward: input and weight gradients of each executed update."""
    return 12 * (x.shape[-1] + w_hh.shape[-1]) * _executed(x, act, lengths)


def call_bytes(
    B: int, T: int, D: int, H: int, dtype: torch.dtype, train: bool = True, per_sample: bool = False
) -> dict:
    """What one call allocates, measured on meta tensors: the tensors that grow with T
    (``full``) and the chunk buffers of each direction (launch.memory_bytes states it)."""
    prec = "ieee"

    def e(*shape, dt=dtype):
        return torch.empty(*shape, device="meta", dtype=dt)

    def meta(shape, dt, dev):
        return torch.empty(shape, device="meta", dtype=dt)

    def nbytes(ts) -> int:
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in ts}.values())

    x, h0, w_ih, w_hh, b = e(B, T, D), e(B, H), e(3 * H, D), e(3 * H, H), e(3 * H)
    gshape = (B, T, H) if per_sample else (T, H)
    g, act, lens = e(*gshape), e(*gshape, dt=torch.uint8), e(B, dt=torch.int64)
    fwd = Fwd(x, h0, w_ih, w_hh, b, b, g, act, lens, train, prec)
    full = [fwd.out, fwd.plane, act]
    out = dict(fwd_chunk=nbytes(fwd.alloc(meta).values()), bwd_chunk=0)
    if train:
        bwd = Bwd(fwd.out, h0, x, h0, w_ih, w_hh, b, b, g, act, lens, fwd.out, fwd.plane, prec)
        full += [bwd.order, bwd.inv, bwd.cnt, bwd.dx, bwd.dg_full]
        out["bwd_chunk"] = nbytes(bwd.alloc(meta).values())
    else:
        full += [fwd.order, fwd.cnt]
    out["full"] = nbytes(full)
    return out


def mask_u8(g: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    """The kernels' mask. The contract of ``active`` (the reference's): the update is computed
    wherever the gate is open or ``active`` (bit 0), and the gate's gradient exists only where
    ``active`` (bit 1; default: where the gate is open). An open neuron that ``active`` misses
    is computed, forward and backward, but its gate gets no gradient."""
    opened = g != 0
    grad = opened if active is None else active.to(torch.bool)
    return (opened | grad).to(torch.uint8) | (grad.to(torch.uint8) << 1)


def su_gru_triton(
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None, graphs=None, precision=None
):
    """Same semantics as ``su_gru_reference``; x on CUDA (or CPU with TRITON_INTERPRET=1).
    ``graphs``: replay the chunks' launches as cached CUDA graphs (graphs.py); None reads $SURNN_CUDA_GRAPHS (default on). ``precision`` (fp32): see the module
    docstring. On a CUDA device the first call per dtype checks the kernels against the
    reference (selfcheck.py); after a failure this process runs the eager PyTorch path."""
    from surnn.ops.triton import selfcheck

    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        # A custom op is not autocast-aware: run it in the autocast dtype (bf16 storage,
        # fp32 state and accumulators inside the kernels).
        dt = torch.get_autocast_dtype("cuda")
        x, h0, w_ih, w_hh = (t.to(dt) for t in (x, h0, w_ih, w_hh))
        b_ih, b_hh = (t.to(dt) if t is not None else None for t in (b_ih, b_hh))
    if not selfcheck.passed(x.device, x.dtype, su_gru_triton):
        from surnn.ops.cpu import su_gru_cpu

        return su_gru_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    B, T, _ = x.shape
    if B == 0 or T == 0:
        from surnn.ops.reference import su_gru_reference

        return su_gru_reference(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths)
    t_run = int(lengths.max()) if lengths is not None and not lengths.is_cuda else T
    if t_run < T:
        # Steps past the longest sequence are closed for everyone: none of them is run (no
        # launches, no GEMM rows); their outputs repeat h_T, and autograd sums their output
        # gradients into dL/dh_T. Lengths on the GPU would need a synchronisation to know it.
        def cut(m):
            return None if m is None else (m[:, :t_run] if m.dim() == 3 else m[:t_run])

        out, h = su_gru_triton(
            x[:, :t_run],
            h0,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            cut(g),
            cut(active),
            lengths,
            graphs,
            precision,
        )
        return torch.cat([out, h[:, None].expand(B, T - t_run, -1)], 1), h
    H = h0.shape[-1]
    act = mask_u8(g, active)
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64, device=x.device)
    zeros = x.new_zeros(3 * H)
    b_ih = b_ih if b_ih is not None else zeros
    b_hh = b_hh if b_hh is not None else zeros
    g = g.to(x.dtype)
    save = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, h0, w_ih, w_hh, b_ih, b_hh, g)
    )
    prec = precision_for(x.dtype, precision)
    graphs = _graphs.wanted(x, graphs)
    out, h, _ = su_gru_fwd(
        x, h0.to(x.dtype), w_ih, w_hh, b_ih, b_hh, g, act, lengths, save, graphs, prec
    )
    return out, h
