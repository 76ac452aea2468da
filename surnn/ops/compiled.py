"""The compiled CPU kernel (``impl="compiled"``): a C++ extension running the whole time
loop of the selective-update GRU, forward and backward, computing only the active neurons
of each step wherever they sit (``csrc/su_gru_kernels.cpp`` explains the kernel;
``compiled_build.py`` builds and loads it).

Same semantics as ``reference.py``. The kernel calls are torch.library custom ops
(``surnn::su_gru_compiled_plan``, ``_fwd`` with its autograd and ``_bwd`` for training,
``surnn::su_gru_compiled_infer`` for inference, padded batches included: the step plan
and the sweep in one C++ call) with fake (shape-only) implementations and FLOP formulas,
as the Triton op's: FlopCounterMode (the trainer's executed/dense FLOPs) counts the
updates the kernel executes, and torch.compile traces them. Imports nothing beyond torch
and the stdlib.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

# The extension's loading, re-exported: surnn.ops.compiled is the kernel's one entry point.
from surnn.ops.compiled_build import _STATE, available, load

__all__ = [
    "_STATE",
    "available",
    "infer",
    "infer_plan",
    "load",
    "plain_call",
    "step_plan",
    "su_gru_compiled",
]


# ------------------------------------------------------------------ the ops
# Each kernel call is a torch.library custom op with a fake (shape-only) implementation,
# as the Triton op's: FlopCounterMode counts them through their FLOP formulas, and
# torch.compile traces them. The training forward's autograd is registered on the op.


@torch.library.custom_op("surnn::su_gru_compiled_plan", mutates_args=())
def _plan_op(
    g: torch.Tensor, active: torch.Tensor | None, lengths: torch.Tensor | None, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step plan: the neurons to compute at each step (active or open; for per-sample
    gates the union over the running samples) as a flat index list ``idx`` int32 [nnz]
    with offsets ``off`` int64 [T+1], the running samples per step ``bs`` int32 [T], and
    the rows of the batch in length order ``perm`` int32 [B] (longest first; empty without
    lengths): the kernels deal the samples to the threads in that order and read and write
    the batch in the caller's order (sorted copies of x, out and their gradients cost ~20%
    of a padded training step at B=64, T=150, H=64). One pass over the mask in C++ (the
    equivalent ATen ops cost ~0.6 ms at T=784, H=256, a tenth of a sparse B=1 sequence)."""
    return _plan(g, active, lengths, batch)


def _plan(g, active, lengths, batch):
    gd = (g if g.is_floating_point() else g.float()).contiguous()
    empty = torch.empty(0)
    act = empty if active is None else active.to(torch.bool).contiguous()
    lens = empty.long() if lengths is None else lengths.to("cpu", torch.long).contiguous()
    idx, off, bs, perm = _STATE["ext"].plan(gd, act, lens, batch)
    return idx, off, bs, perm


@_plan_op.register_fake
def _(g, active, lengths, batch):
    T = g.shape[-2]
    nnz = torch.library.get_ctx().new_dynamic_size()
    i32 = torch.int32
    perm = g.new_empty(batch if lengths is not None else 0, dtype=i32)
    return (
        g.new_empty(nnz, dtype=i32),
        g.new_empty(T + 1, dtype=torch.int64),
        g.new_empty(T, dtype=i32),
        perm,
    )


@torch.library.custom_op("surnn::su_gru_compiled_fwd", mutates_args=())
def _fwd_op(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    g: torch.Tensor,
    active: torch.Tensor | None,
    idx: torch.Tensor,
    off: torch.Tensor,
    bs: torch.Tensor,
    perm: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B,T,H], h_T [B,H], saved [nnz,4,B]): the whole forward sweep in C++ on
    contiguous inputs of one dtype, the batch in the caller's order (perm: its rows in
    length order, or empty), on torch's thread count. ``active`` is used by the backward
    only (the gate's gradient is masked by it)."""
    nthreads = torch.get_num_threads()
    out, saved = _STATE["ext"].forward(
        x, h0, w_ih, w_hh, b_ih, b_hh, g, idx, off, bs, perm, True, nthreads
    )
    return out, out[:, -1].clone(), saved


@_fwd_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, idx, off, bs, perm):
    B, T, _ = x.shape
    H = h0.shape[-1]
    return x.new_empty(B, T, H), x.new_empty(B, H), x.new_empty(idx.shape[0], 4, B)


@torch.library.custom_op("surnn::su_gru_compiled_bwd", mutates_args=())
def _bwd_op(
    x: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    g: torch.Tensor,
    idx: torch.Tensor,
    off: torch.Tensor,
    bs: torch.Tensor,
    perm: torch.Tensor,
    out: torch.Tensor,
    saved: torch.Tensor,
    gout: torch.Tensor,
    grad_h: torch.Tensor,
    need_dx: bool,
    need_w: bool,
    need_dg: bool,
) -> tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
]:
    """(dx, dW_ih, dW_hh, db_ih, db_hh, dg at the plan's entries (time-only gate: [nnz];
    per sample: [nnz, B]), dh0): the whole reverse sweep in C++ (per-thread weight
    gradients summed here). A gradient not asked for is empty."""
    nthreads = torch.get_num_threads()
    dh = grad_h.clone()  # the kernel turns dL/dh_T into dL/dh0 in place
    res = _STATE["ext"].backward(
        x,
        h0,
        w_ih,
        w_hh,
        g,
        idx,
        off,
        bs,
        perm,
        out,
        saved,
        gout,
        dh,
        need_dx,
        need_w,
        need_dg,
        nthreads,
    )
    dx, dwi, dwh, dbi, dbh, dgp, dgs = res
    if need_w:
        dwi, dwh = dwi.sum(0), dwh.sum(0)
    if need_dg and g.dim() == 2:
        dgp = dgp.sum(0)
    return dx, dwi, dwh, dbi.sum(0), dbh.sum(0), dgp, dgs, dh


@_bwd_op.register_fake
def _(x, h0, w_ih, w_hh, g, idx, off, bs, perm, out, saved, gout, grad_h, *needs):
    need_dx, need_w, need_dg = needs
    B, H = h0.shape
    nnz = idx.shape[0]
    per_sample = g.dim() == 3
    return (
        x.new_empty(x.shape if need_dx else (0,)),
        x.new_empty(w_ih.shape if need_w else (0,)),
        x.new_empty(w_hh.shape if need_w else (0,)),
        x.new_empty(3 * H),
        x.new_empty(3 * H),
        x.new_empty((nnz,) if need_dg and not per_sample else (0,)),
        x.new_empty((nnz, B) if need_dg and per_sample else (0,)),
        x.new_empty(B, H),
    )


def _setup_context(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active, idx, off, bs, perm = inputs
    out, _, saved = output
    # _bwd_op's inputs before the gradients, in its order, then the mask
    ctx.save_for_backward(x, h0, w_ih, w_hh, g, idx, off, bs, perm, out, saved, active)


def _backward(ctx, grad_out, grad_h, _grad_saved):
    *inputs, active = ctx.saved_tensors
    x, h0, w_ih, w_hh, g, idx, off, bs, perm, out, saved = inputs
    need = ctx.needs_input_grad
    gout = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
    gh = torch.zeros_like(h0) if grad_h is None else grad_h.contiguous()
    needs = need[0], any(need[2:6]), need[6]  # dx, the weights and biases, dg
    dx, dwi, dwh, dbi, dbh, dgp, dgs, dh0 = _bwd_op(*inputs, gout, gh, *needs)
    dg = None
    if need[6]:  # the plan's entries back into g's shape
        steps = torch.repeat_interleave(
            torch.arange(off.shape[0] - 1), off.diff(), output_size=idx.shape[0]
        )
        dg = torch.zeros_like(g)
        if g.dim() == 2:
            dg[steps, idx.long()] = dgp
        else:
            dg[:, steps, idx.long()] = dgs.T
        if active is not None:  # the gate's gradient exists only where active
            dg = dg * active
    grads = (dx, dh0, dwi, dwh, dbi, dbh, dg)
    return *(gr if n else None for gr, n in zip(grads, need)), *([None] * 5)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("surnn::su_gru_compiled_infer", mutates_args=())
def _infer_op(
    x: torch.Tensor,
    h0: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    g: torch.Tensor,
    active: torch.Tensor | None,
    lengths: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B,T,H], h_T [B,H]) without gradients: layouts, absent h0 and biases, lengths in
    any order, the step plan and the forward sweep all in one C++ call (at batch 1 the
    training path's ~15 Python and ATen steps cost as much as a sparse sweep; at B=250 its
    length-sorted copies of x and out cost a fifth of the sweep)."""
    nthreads = torch.get_num_threads()
    out, h_t = _STATE["ext"].infer(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, nthreads)
    return out, h_t


@_infer_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths):
    B, T, _ = x.shape
    H = w_hh.shape[-1]
    return x.new_empty(B, T, H), x.new_empty(B, H)


def plain_call(*tensors) -> bool:
    """True when nothing has to see the inference call as an operator: no dispatch mode
    (FlopCounterMode, fake tensors), no torch.compile trace, plain tensors or parameters.
    Then ``_infer_op``'s extension function is called directly: the custom op's dispatch
    costs ~80 us per call, ~200 us when the caches are cold (a B=1 sMNIST sequence at 17%
    updates takes ~3 ms). Uses torch's dispatch-mode stack depth where it exists; without
    it every call goes through the op."""
    if torch.compiler.is_compiling():
        return False
    depth = getattr(torch._C, "_len_torch_dispatch_stack", None)
    return (
        depth is not None
        and depth() == 0
        and all(t is None or type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)
    )


def infer(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, nthreads: int):
    """(out [B,T,H], h_T [B,H]) of an unpadded inference call, straight to the extension
    (the caller checked ``plain_call``; ``_infer_op`` is the same call as an operator)."""
    return _STATE["ext"].infer(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, None, nthreads)


def step_plan(g: torch.Tensor, active: torch.Tensor | None):
    """The extension's ``StepPlan`` of a time-only gate g [T, H] (float32/64) and its
    optional active mask: the neurons each step computes, checked once, and g's values
    kept only where some computed neuron's is not 1. ``infer_plan`` runs it without
    reading g, the mask or any plan check per call (at batch 1, T=784, H=256, 17% open:
    a sparse sweep ~6% shorter)."""
    return _STATE["ext"].StepPlan(g, active)


def infer_plan(x, h0, w_ih, w_hh, b_ih, b_hh, plan, nthreads: int):
    """``infer`` with the gate's ``step_plan`` in place of g and active: the same outputs,
    h_T as one layer's h_n [1, B, H]."""
    return _STATE["ext"].infer_plan(x, h0, w_ih, w_hh, b_ih, b_hh, plan, nthreads)


def _executed(off: torch.Tensor, bs: torch.Tensor) -> int:
    """Executed (sequence, step, neuron) updates: active neurons x running samples."""
    return int(((off[1:] - off[:-1]) * bs.to(off.dtype)).sum())


@register_flop_formula(torch.ops.surnn.su_gru_compiled_fwd, get_raw=True)
def _fwd_flops(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, idx, off, bs, *a, **kw) -> int:
    """2 * 3 * (D + H) FLOPs per executed update (pointwise work not counted)."""
    return 6 * (x.shape[-1] + h0.shape[-1]) * _executed(off, bs)


@register_flop_formula(torch.ops.surnn.su_gru_compiled_bwd, get_raw=True)
def _bwd_flops(x, h0, w_ih, w_hh, g, idx, off, bs, *a, **kw) -> int:
    """Twice the forward: input and weight gradients of each executed update."""
    return 12 * (x.shape[-1] + h0.shape[-1]) * _executed(off, bs)


@register_flop_formula(torch.ops.surnn.su_gru_compiled_infer, get_raw=True)
def _infer_flops(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, *a, **kw) -> int:
    """As the forward's: the plan counts the executed updates."""
    _, off, bs, _ = _plan(g.detach(), active, lengths, x.shape[0])
    return 6 * (x.shape[-1] + w_hh.shape[-1]) * _executed(off, bs)


def su_gru_compiled(
    x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None, dense_grad_max_h=None
):
    """The compiled kernel; same arguments and semantics as ``su_gru_reference``. The
    caller (``surnn.ops.su_gru``) checks ``available()``, the device and the dtype first.
    Returns None (nothing run) for a call that needs gradients, computes every update and
    has more than ``dense_grad_max_h`` neurons: ``auto`` then runs the eager path, whose
    dense GEMMs are faster there."""
    B, T, _ = x.shape
    H = w_hh.shape[-1]
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh, g)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not grad:  # one C++ call, padded batches included
        args = (*tensors, active, lengths)
        if plain_call(*args):
            return _STATE["ext"].infer(*args, torch.get_num_threads())
        return _infer_op(*args)
    if h0 is None:
        h0 = x.new_zeros(B, H)
    idx, off, bs, perm = _plan_op(g.detach(), active, lengths, B)
    if dense_grad_max_h is not None and dense_grad_max_h < H and int(off[-1]) == T * H:
        return None
    zeros = x.new_zeros(3 * H)
    out, h_t, _ = _fwd_op(
        x.contiguous(),
        h0.contiguous(),
        w_ih.contiguous(),
        w_hh.contiguous(),
        (zeros if b_ih is None else b_ih).contiguous(),
        (zeros if b_hh is None else b_hh).contiguous(),
        g.to(x.dtype).contiguous(),
        None if active is None else active.detach(),
        idx,
        off,
        bs,
        perm,
    )
    return out, h_t
