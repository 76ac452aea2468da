"""CPU fast path: only active neurons are computed, with a hand-written backward.

Forward, per step: for each active slab (a view after the neuron reordering of
``schedule.make_plan``) or gathered row set, one GEMM for the input projection and one
for the recurrent projection of just those rows, then the GRU pointwise math. When every
neuron is active at every step, the input projection is hoisted into one large GEMM.
Padded sequences are handled as packed ones: the batch is sorted by length once and step
t only touches the sequences still running. No autograd graph is built per step.

Backward walks the steps in reverse, propagating dL/dh through the active rows only, and
stores the pre-activation gradients; weight (and input) gradients are then a few large
GEMMs per neuron group that shares an open/closed pattern. When the pattern has too many
groups, weight gradients are accumulated per step instead.
"""

from __future__ import annotations

import torch

from surnn.ops.schedule import Plan, make_plan


def _blocks(step, D: int, H: int, Wx, Wh, bx, bh):
    """Yield (wsel, hsel, Wx_A [3A, D], Wh_A [3A, H], bx_A, bh_A) for one step's active
    rows: ``wsel`` selects the (reordered) weight rows, ``hsel`` the state columns; each is
    a slice (views) or a LongTensor (gathered copies)."""
    for wsel, hsel in step:
        if isinstance(wsel, slice):
            yield (
                wsel,
                hsel,
                Wx[wsel].view(-1, D),
                Wh[wsel].view(-1, H),
                bx[wsel].view(-1),
                bh[wsel].view(-1),
            )
        else:
            yield (
                wsel,
                hsel,
                Wx.index_select(0, wsel).view(-1, D),
                Wh.index_select(0, wsel).view(-1, H),
                bx.index_select(0, wsel).view(-1),
                bh.index_select(0, wsel).view(-1),
            )


def _take(t: torch.Tensor, sel, dim: int) -> torch.Tensor:
    if isinstance(sel, slice):
        return t[(slice(None),) * dim + (sel,)]
    return t.index_select(dim, sel)


def _put(dst: torch.Tensor, sel, src: torch.Tensor) -> None:
    """dst[:, sel] = src (dst is [nb, H])."""
    if isinstance(sel, slice):
        dst[:, sel] = src
    else:
        dst.index_copy_(1, sel, src)


class _Prepared:
    """Inputs reordered once: batch sorted by length, neurons in plan order."""

    def __init__(self, x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, plan: Plan):
        B, T, D = x.shape
        H = h0.shape[-1]
        self.B, self.T, self.D, self.H = B, T, D, H
        perm = plan.perm
        if lengths is not None:
            self.order = torch.argsort(lengths.cpu(), descending=True, stable=True)
            self.inv_order = torch.argsort(self.order)
            ls = lengths.cpu()[self.order]
            self.bs = (torch.arange(T)[:, None] < ls[None, :]).sum(1).tolist()
            self.lens = ls
            x, h0 = x[self.order], h0[self.order]
            if g.dim() == 3:
                g, active = g[self.order], active[self.order]
        else:
            self.order = self.lens = None
            self.bs = [B] * T
        self.x = x.contiguous()
        self.h0 = h0
        # Weights neuron-major [H, 3, .] with rows in plan order; the state keeps the
        # original neuron order (so the recurrent weights' columns are not permuted).
        self.Wx = w_ih.view(3, H, D)[:, perm].transpose(0, 1).contiguous()
        self.Wh = w_hh.view(3, H, H)[:, perm].transpose(0, 1).contiguous()
        zeros = x.new_zeros(3 * H)
        self.bx = (b_ih if b_ih is not None else zeros).view(3, H)[:, perm].T.contiguous()
        self.bh = (b_hh if b_hh is not None else zeros).view(3, H)[:, perm].T.contiguous()
        self.per_sample = g.dim() == 3
        self.g = g.contiguous()
        self.active = active if self.per_sample else None
        self.unit = not self.per_sample and bool((g[active] == 1).all())

    def gate(self, t: int, nb: int, sel) -> torch.Tensor:
        if self.per_sample:
            return _take(self.g[:nb, t], sel, 1)
        return _take(self.g[t], sel, 0)


def _hoisted_input(p: _Prepared, plan: Plan) -> torch.Tensor | None:
    """Input projections of every executed (sequence, step, neuron) as one GEMM per neuron
    group: [B, T, H, 3] in plan order (only executed entries are written), or None when the
    plan has too many groups (then the input projection is done per step)."""
    B, T, D, H = p.B, p.T, p.D, p.H
    if plan.groups is None or T == 0:
        return None
    x2 = p.x.view(B * T, D)
    if plan.all_active and p.lens is None:
        return torch.addmm(p.bx.view(-1), x2, p.Wx.view(3 * H, D).T).view(B, T, H, 3)
    xp = p.x.new_empty(B, T, H, 3)
    xpv = xp.view(B * T, H * 3)
    for s, e, st in plan.groups:
        rows = torch.arange(B)[:, None] * T + st[None, :]
        if p.lens is not None:
            rows = rows[st[None, :] < p.lens[:, None]]
        rows = rows.reshape(-1)
        res = torch.addmm(p.bx[s:e].view(-1), x2.index_select(0, rows), p.Wx[s:e].view(-1, D).T)
        xpv[:, 3 * s : 3 * e].index_copy_(0, rows, res)
    return xp


def _forward(p: _Prepared, plan: Plan, save: bool):
    B, T, D, H = p.B, p.T, p.D, p.H
    out = p.x.new_empty(B, T + 1, H)
    out[:, 0] = p.h0
    xp = _hoisted_input(p, plan)
    saved: list = []
    for t in range(T):
        nb = p.bs[t]
        out[:, t + 1] = out[:, t]
        per_step = []
        if nb == 0:
            saved.append(per_step)
            continue
        hprev = out[:nb, t]
        hnext = out[:nb, t + 1]
        for wsel, sel, Wx_A, Wh_A, bx_A, bh_A in _blocks(
            plan.steps[t], D, H, p.Wx, p.Wh, p.bx, p.bh
        ):
            A = Wh_A.shape[0] // 3
            if xp is not None:
                gx = _take(xp[:nb, t], wsel, 1).reshape(nb, -1)
            else:
                gx = torch.addmm(bx_A, p.x[:nb, t], Wx_A.T)
            gh = torch.addmm(bh_A, hprev, Wh_A.T)
            gx3, gh3 = gx.view(nb, A, 3), gh.view(nb, A, 3)
            rz = torch.sigmoid(gx3[..., :2] + gh3[..., :2])
            n = torch.tanh(torch.addcmul(gx3[..., 2], rz[..., 0], gh3[..., 2]))
            hp = _take(hprev, sel, 1)
            f = torch.lerp(n, hp, rz[..., 1])
            _put(hnext, sel, f if p.unit else torch.lerp(hp, f, p.gate(t, nb, sel)))
            if save:
                per_step.append((gh3, rz, n))
        saved.append(per_step)
    return out, saved


class _SuGRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, plan):
        p = _Prepared(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, plan)
        out, saved = _forward(p, plan, save=True)
        ctx.p, ctx.plan, ctx.out_ext, ctx.saved = p, plan, out, saved
        ctx.has_b = (b_ih is not None, b_hh is not None)
        return _unpermute_out(p, plan, out)

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        p, plan = ctx.p, ctx.plan
        need = ctx.needs_input_grad
        grads = _backward(p, plan, ctx.out_ext, ctx.saved, grad_out, grad_h, need)
        dx, dh0, dwi, dwh, dbi, dbh, dg = grads
        return (
            dx,
            dh0,
            dwi,
            dwh,
            dbi if ctx.has_b[0] else None,
            dbh if ctx.has_b[1] else None,
            dg,
            None,
            None,
            None,
        )


def _unpermute_out(p: _Prepared, plan: Plan, out: torch.Tensor):
    o, h = out[:, 1:], out[:, p.T]
    if p.order is not None:
        o, h = o[p.inv_order], h[p.inv_order]
    return o, h


def _gate_grads(p: _Prepared, t, nb, sel, dhA, hp, n, z, dg):
    f = torch.lerp(n, hp, z)
    v = dhA * (f - hp)
    if p.per_sample:
        v = v * _take(p.active[:nb, t], sel, 1)
        if isinstance(sel, slice):
            dg[:nb, t, sel] = v
        else:
            dg[:nb, t].index_copy_(1, sel, v)
    elif isinstance(sel, slice):
        dg[t, sel] += v.sum(0)
    else:
        dg[t].index_add_(0, sel, v.sum(0))


def _backward(p: _Prepared, plan: Plan, out, saved, grad_out, grad_h, need):
    B, T, D, H = p.B, p.T, p.D, p.H

    def to_plan(t: torch.Tensor | None, shape) -> torch.Tensor:
        if t is None:
            return out.new_zeros(shape)
        return t[p.order] if p.order is not None else t

    gop = to_plan(grad_out, (B, T, H))
    dh = to_plan(grad_h, (B, H)).clone()
    dx = p.x.new_zeros(B, T, D) if need[0] else None
    dWx, dWh = p.Wx.new_zeros(H, 3, D), p.Wh.new_zeros(H, 3, H)
    dbx, dbh = p.bx.new_zeros(H, 3), p.bh.new_zeros(H, 3)
    dg = torch.zeros_like(p.g) if need[6] else None
    grouped = plan.groups is not None
    if grouped:
        dGx, dGh = out.new_zeros(B, T, H, 3), out.new_zeros(B, T, H, 3)
    for t in range(T - 1, -1, -1):
        dh += gop[:, t]
        nb = p.bs[t]
        if nb == 0:
            continue
        hprev, dht = out[:nb, t], dh[:nb]
        pending = []
        blocks = _blocks(plan.steps[t], D, H, p.Wx, p.Wh, p.bx, p.bh)
        for (wsel, sel, Wx_A, Wh_A, _, _), (gh3, rz, n) in zip(blocks, saved[t]):
            r, z = rz[..., 0], rz[..., 1]
            hp, dhA = _take(hprev, sel, 1), _take(dht, sel, 1)
            if dg is not None:
                _gate_grads(p, t, nb, sel, dhA, hp, n, z, dg)
            if p.unit:
                df = dhA
                dhp = df * z
            else:
                df = dhA * p.gate(t, nb, sel)
                dhp = torch.addcmul(dhA - df, df, z)
            dz = df * (hp - n)
            dan = (df - df * z) * (1 - n * n)
            dar = dan * gh3[..., 2] * r * (1 - r)
            daz = dz * z * (1 - z)
            dgx = torch.stack([dar, daz, dan], -1)
            dgh = torch.stack([dar, daz, dan * r], -1)
            _put(dht, sel, dhp)
            pending.append((wsel, Wx_A, Wh_A, dgx.view(nb, -1), dgh.view(nb, -1)))
        for sel, Wx_A, Wh_A, dgx, dgh in pending:
            dht.addmm_(dgh, Wh_A)
            if grouped:
                if isinstance(sel, slice):
                    dGx[:nb, t, sel] = dgx.view(nb, -1, 3)
                    dGh[:nb, t, sel] = dgh.view(nb, -1, 3)
                else:
                    dGx[:nb, t].index_copy_(1, sel, dgx.view(nb, -1, 3))
                    dGh[:nb, t].index_copy_(1, sel, dgh.view(nb, -1, 3))
                continue
            if dx is not None:
                dx[:nb, t].addmm_(dgx, Wx_A)
            gwx, gwh = dgx.T @ p.x[:nb, t], dgh.T @ hprev
            if isinstance(sel, slice):
                dWx[sel].view(-1, D).add_(gwx)
                dWh[sel].view(-1, H).add_(gwh)
                dbx[sel].view(-1).add_(dgx.sum(0))
                dbh[sel].view(-1).add_(dgh.sum(0))
            else:
                dWx.index_add_(0, sel, gwx.view(-1, 3, D))
                dWh.index_add_(0, sel, gwh.view(-1, 3, H))
                dbx.index_add_(0, sel, dgx.sum(0).view(-1, 3))
                dbh.index_add_(0, sel, dgh.sum(0).view(-1, 3))
    if grouped:
        _group_grads(p, plan, out, dGx, dGh, dx, dWx, dWh, dbx, dbh)
    return _unpermute_grads(p, plan, dx, dh, dWx, dWh, dbx, dbh, dg, need)


def _group_grads(p, plan, out, dGx, dGh, dx, dWx, dWh, dbx, dbh):
    """Weight, bias and input gradients as one pair of GEMMs per neuron group."""
    B, T, D, H = p.B, p.T, p.D, p.H
    for s, e, st in plan.groups:
        A, n = e - s, len(st)
        if n == T:
            Gx, Gh = dGx[:, :, s:e].reshape(B * T, 3 * A), dGh[:, :, s:e].reshape(B * T, 3 * A)
            Xg, Hg = p.x.view(B * T, D), out[:, :T].reshape(B * T, H)
        else:
            Gx = dGx[:, st, s:e].reshape(B * n, 3 * A)
            Gh = dGh[:, st, s:e].reshape(B * n, 3 * A)
            Xg, Hg = p.x[:, st].reshape(B * n, D), out[:, st].reshape(B * n, H)
        dWx[s:e].view(3 * A, D).copy_(Gx.T @ Xg)
        dWh[s:e].view(3 * A, H).copy_(Gh.T @ Hg)
        dbx[s:e].view(-1).copy_(Gx.sum(0))
        dbh[s:e].view(-1).copy_(Gh.sum(0))
        if dx is not None:
            gx = (Gx @ p.Wx[s:e].view(3 * A, D)).view(B, n, D)
            if n == T:
                dx += gx
            else:
                dx.index_add_(1, st, gx)


def _unpermute_grads(p, plan, dx, dh, dWx, dWh, dbx, dbh, dg, need):
    ip, H = plan.inv_perm, p.H
    dwi = dWx.transpose(0, 1)[:, ip].reshape(3 * H, p.D) if need[2] else None
    dwh = dWh.transpose(0, 1)[:, ip].reshape(3 * H, H) if need[3] else None
    dbi = dbx.T[:, ip].reshape(-1) if need[4] else None
    dbh_ = dbh.T[:, ip].reshape(-1) if need[5] else None
    dh0 = dh
    if p.order is not None:
        dh0 = dh0[p.inv_order]
        dx = dx[p.inv_order] if dx is not None else None
        if dg is not None and dg.dim() == 3:
            dg = dg[p.inv_order]
    return dx, dh0 if need[1] else None, dwi, dwh, dbi, dbh_, dg


def compute_mask(g: torch.Tensor, active: torch.Tensor | None, lengths: torch.Tensor | None):
    """Full compute mask (same shape as g, active or open) and its time-only union."""
    act = g != 0 if active is None else (active | (g != 0))
    if lengths is None:
        union = act.any(0) if act.dim() == 3 else act
        return act, union
    T = g.shape[-2]
    valid = torch.arange(T, device=g.device)[None, :] < lengths.to(g.device)[:, None]
    full = act if act.dim() == 3 else act[None].expand(valid.shape[0], -1, -1)
    union = (full & valid[:, :, None]).any(0)
    return act, union


def su_gru_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None, plan=None):
    """The fast path (any device, tuned for CPU). Same semantics as ``su_gru_reference``."""
    act, union = compute_mask(g, active, lengths)
    if plan is None:
        plan = make_plan(union)
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh, g)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _SuGRUFunction.apply(x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, plan)
    with torch.no_grad():
        p = _Prepared(x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, plan)
        out, _ = _forward(p, plan, save=False)
        return _unpermute_out(p, plan, out)
