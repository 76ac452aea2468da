"""CPU fast path: only active neurons are computed, with a hand-written backward.

The plan (``schedule.make_plan``) lays the weight rows out so that each step's active
neurons are one or a few contiguous row blocks (or gathers them). Forward, per step and
block: one GEMM for the recurrent projection of just those rows (the input projections
of all executed updates are hoisted into one large GEMM per neuron group), then the GRU
pointwise math on contiguous ``[r | z | n]`` columns. Padded sequences are handled as
packed ones: the batch is sorted by length once and step t touches only the sequences
still running. No autograd graph is built per step.

Backward walks the steps in reverse, propagating dL/dh through the active rows only and
storing the pre-activation gradients; weight, bias and input gradients are then one
GEMM each per neuron group. In gather mode (many groups) weight gradients are
accumulated per step instead.
"""

from __future__ import annotations

import torch

from surnn.ops.schedule import Plan, compute_mask, make_plan


def _take(t: torch.Tensor, sel, dim: int) -> torch.Tensor:
    if isinstance(sel, slice):
        return t[(slice(None),) * dim + (sel,)]
    return t.index_select(dim, sel)


def _size(sel, n: int) -> int:
    return len(range(*sel.indices(n))) if isinstance(sel, slice) else len(sel)


def _put(dst: torch.Tensor, sel, src: torch.Tensor) -> None:
    """dst[:, sel] = src."""
    if isinstance(sel, slice):
        dst[:, sel] = src
    else:
        dst.index_copy_(1, sel, src)


class _Prepared:
    """Inputs reordered once: batch sorted by length, weight rows in plan layout."""

    def __init__(self, x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, plan: Plan):
        B, T, D = x.shape
        H = h0.shape[-1]
        self.B, self.T, self.D, self.H = B, T, D, H
        self.order = self.lens = None
        self.bs = [B] * T
        if lengths is not None:
            self.order = torch.argsort(lengths.cpu(), descending=True, stable=True)
            self.inv_order = torch.argsort(self.order)
            self.lens = lengths.cpu()[self.order]
            self.bs = (torch.arange(T)[:, None] < self.lens[None, :]).sum(1).tolist()
            x, h0 = x[self.order], h0[self.order]
            if g.dim() == 3:
                g, active = g[self.order], active[self.order]
        self.x, self.h0 = x.contiguous(), h0
        zeros = x.new_zeros(3 * H)
        lay = plan.lay

        def rows(w: torch.Tensor) -> torch.Tensor:
            return (w if lay is None else w.index_select(0, lay)).contiguous()

        self.Wx, self.Wh = rows(w_ih), rows(w_hh)
        self.WhT, self._blocks = None, {}
        self.bx = rows(b_ih if b_ih is not None else zeros)
        self.bh = rows(b_hh if b_hh is not None else zeros)
        self.per_sample = g.dim() == 3
        self.g = g.contiguous()
        self.active = active if self.per_sample else None
        self.unit = not self.per_sample and bool((g[active] == 1).all())
        # Gathered steps fetch all of a row's parameters with one index_select.
        gathers = any(isinstance(b[0], torch.Tensor) for step in plan.steps for b in step)
        self.Wc = None
        if gathers:  # row stride padded to 16 elements (aligned rows for the GEMMs)
            pad = -(D + H + 2) % 16
            parts = [self.Wx, self.Wh, self.bx[:, None], self.bh[:, None]]
            self.Wc = torch.cat(parts + [self.Wx.new_zeros(3 * H, pad)], 1)

    def weights(self, wsel):
        """(Wx_A, Wh_A, bx_A, bh_A) for layout rows wsel (views, or one gathered copy)."""
        if isinstance(wsel, slice):
            return self.Wx[wsel], self.Wh[wsel], self.bx[wsel], self.bh[wsel]
        D, H = self.D, self.H
        Wc = self.Wc.index_select(0, wsel)
        return Wc[:, :D], Wc[:, D : D + H], Wc[:, D + H], Wc[:, D + H + 1]

    def step_weights(self, wsel):
        """(Wx_A, Wh_A^T, bx_A, bh_A) for the forward step. For row slices Wh_A^T is a
        column slice of a transposed copy of Wh: with 2 threads the GEMM h @ Wh_A^T runs
        about 2x faster on that layout than on the transposed view of Wh_A (MKL
        parallelises the transposed-operand case poorly). Slices are cached (a plan
        reuses a few slabs at every step)."""
        if not isinstance(wsel, slice):
            Wx_A, Wh_A, bx_A, bh_A = self.weights(wsel)
            return Wx_A, Wh_A.T, bx_A, bh_A
        key = (wsel.start, wsel.stop)
        hit = self._blocks.get(key)
        if hit is None:
            if self.WhT is None:
                self.WhT = self.Wh.T.contiguous()
            hit = self._blocks[key] = (
                self.Wx[wsel],
                self.WhT[:, wsel],
                self.bx[wsel],
                self.bh[wsel],
            )
        return hit

    def gate(self, t: int, nb: int, sel) -> torch.Tensor:
        if self.per_sample:
            return _take(self.g[:nb, t], sel, 1)
        return _take(self.g[t], sel, 0)


class _Packing:
    """For each neuron group, its executed (sequence, step) pairs packed step-major:
    step t of the group owns rows [off[t], off[t] + bs_t) of the group's packed tensors,
    so a step reads its hoisted input projection (and writes its gradients) as one
    contiguous slice."""

    def __init__(self, p: _Prepared, plan: Plan):
        B, T = p.B, p.T
        bs = torch.tensor(p.bs, dtype=torch.long)
        self.rows_x, self.rows_h, self.off = [], [], []
        for _, _, st in plan.groups:
            counts = bs[st]
            starts = torch.cumsum(counts, 0) - counts
            total = int(counts.sum())
            tt = torch.repeat_interleave(st, counts)
            bb = torch.arange(total) - torch.repeat_interleave(starts, counts)
            self.rows_x.append(bb * T + tt)  # rows of x.view(B*T, D)
            self.rows_h.append(bb * (T + 1) + tt)  # rows of out.view(B*(T+1), H): h_{t-1}
            self.off.append(dict(zip(st.tolist(), starts.tolist())))
        self.B = B


def _hoisted_input(p: _Prepared, plan: Plan, pk: _Packing | None):
    """Input projections of every executed (sequence, step, neuron): one GEMM per neuron
    group, packed as in ``_Packing``, or batch-major [B, m, 3A] from a strided view of x
    when the group's steps are evenly spaced and nothing is padded (no gather of x); all
    neurons always active without padding: one [B, T, 3H] GEMM. None in gather mode (the
    input projection is then per step)."""
    B, T, D = p.B, p.T, p.D
    if pk is None:
        return None, None
    x2 = p.x.view(B * T, D)
    if plan.all_active and p.lens is None:
        return torch.addmm(p.bx, x2, p.Wx.T).view(B, T, -1), None
    res = []
    for (s, e, st), rows in zip(plan.groups, pk.rows_x):
        w = slice(3 * s, 3 * e)
        if not len(rows):
            res.append(None)
        elif (xk := _evenly_spaced(p, st)) is not None:  # [B, m, D] view: no gather
            res.append(torch.baddbmm(p.bx[w], xk, p.Wx[w].T.expand(B, D, -1)))
        else:
            res.append(torch.addmm(p.bx[w], x2.index_select(0, rows), p.Wx[w].T))
    return None, res


def _evenly_spaced(p: _Prepared, st: torch.Tensor) -> torch.Tensor | None:
    """x at steps st as a strided [B, m, D] view when every sequence runs them all (no
    padding) and they are evenly spaced (slab schedules), else None."""
    if p.lens is not None:
        return None
    gaps = torch.diff(st)
    if len(gaps) and not bool((gaps == gaps[0]).all()):
        return None
    t0, P = int(st[0]), int(gaps[0]) if len(gaps) else 1
    return p.x[:, t0 : t0 + P * (len(st) - 1) + 1 : P]


def _per_step(r: torch.Tensor, counts: list[int], cols: slice = slice(None)) -> tuple:
    """A group's hoisted input projection as per-step [bs_t, k] views of columns cols:
    r is packed step-major [rows, 3A] (split by counts) or batch-major [B, m, 3A]."""
    if r.dim() == 3:
        return r[..., cols].unbind(1)
    return r[:, cols].split(counts)


def _gate_views(G: torch.Tensor, N: torch.Tensor, A: int) -> tuple:
    """(gh, rz, r, z, hn, n) views of the pre-activation buffer G [*, 3A] and N [*, A]."""
    return G, G[:, : 2 * A], G[:, :A], G[:, A : 2 * A], G[:, 2 * A :], N


def _lanes(p: _Prepared, plan: Plan, pk, out, xp, res, save: bool) -> dict:
    """For every neuron group whose blocks are slices (slab schedules, unit gate), each
    step's views, made in bulk: a few split/unbind calls per group instead of ~10 slices
    and 3 allocations per step. Step t of group gid then costs 5 calls (GEMM into a
    preallocated view, 4 fused-in-place pointwise ops). Pre-activations go to one packed
    buffer per group when saved for the backward (the same rows as ``_Packing``), else
    to one reused workspace."""
    B, T = p.B, p.T
    first: dict = {}
    for blocks in plan.steps:
        for wsel, hsel, gid in blocks:
            if gid is not None and gid not in first and isinstance(hsel, slice):
                first[gid] = (wsel, hsel)
    lanes = {}
    for gid, (wsel, hsel) in first.items():
        _, WhT, _, bh = p.step_weights(wsel)
        A = WhT.shape[1] // 3
        if xp is not None:
            steps, counts = list(range(T)), [B] * T
            src = xp[:, :, wsel]
            gx = zip(src[..., : 2 * A].unbind(1), src[..., 2 * A :].unbind(1))
        elif res[gid] is not None:
            steps = list(pk.off[gid])
            counts = [p.bs[t] for t in steps]
            r = res[gid]
            gx = zip(
                _per_step(r, counts, slice(0, 2 * A)), _per_step(r, counts, slice(2 * A, None))
            )
        else:
            continue

        if save:  # one packed buffer per group, split into the steps' rows
            n_rows = sum(counts)
            parts = _gate_views(out.new_empty(n_rows, 3 * A), out.new_empty(n_rows, A), A)
            work = dict(zip(steps, zip(*(v.split(counts) for v in parts))))
        else:  # one workspace reused at every step
            work = dict.fromkeys(
                steps, _gate_views(out.new_empty(B, 3 * A), out.new_empty(B, A), A)
            )
        lanes[gid] = (WhT, bh, out[:, :, hsel], dict(zip(steps, gx)), work)
    return lanes


def _forward(p: _Prepared, plan: Plan, save: bool):
    B, T, H = p.B, p.T, p.H
    out = p.x.new_empty(B, T + 1, H)
    out[:, 0] = p.h0
    pk = _Packing(p, plan) if plan.groups is not None else None
    xp, res = _hoisted_input(p, plan, pk)
    # Per-step views made in bulk up front: the loop below runs T times and at low update
    # rates its fixed cost (views, dispatch), not the FLOPs, bounds the speed.
    states = out.unbind(1)
    xs = xp.unbind(1) if xp is not None else None
    lanes = _lanes(p, plan, pk, out, xp, res, save) if p.unit and pk is not None else {}
    gxs = None
    if res is not None:  # per-step views for the generic step; a lane serves every step of
        # its group when nothing is padded, so those groups need none
        gxs = [
            dict(zip(off, _per_step(r, [p.bs[t] for t in off])))
            if r is not None and (gid not in lanes or p.lens is not None)
            else {}
            for gid, (off, r) in enumerate(zip(pk.off, res))
        ]
    saved: list = []
    for t in range(T):
        nb = p.bs[t]
        blocks = plan.steps[t]
        hprev, hnext = states[t], states[t + 1]
        if nb < B or sum(_size(hsel, H) for _, hsel, _ in blocks) < H:
            hnext.copy_(hprev)  # carry the closed neurons (and finished sequences)
        per_step: list = []
        saved.append(per_step)
        if nb == 0:
            continue
        if nb < B:
            hprev, hnext = hprev[:nb], hnext[:nb]
        for wsel, hsel, gid in blocks:
            lane = lanes.get(gid) if nb == B else None
            if lane is not None:  # the fast lane: same math as below, no slicing
                WhT_A, bh_A, hs, gxs_, work = lane  # hs: the group's columns of out
                gx_rz, gx_n = gxs_[t]
                gh, rz, r, z, hn, n = work[t]
                torch.addmm(bh_A, hprev, WhT_A, out=gh)
                rz.add_(gx_rz).sigmoid_()
                torch.addcmul(gx_n, r, hn, out=n).tanh_()
                # select per step: a bulk unbind would make T views for each of the groups
                torch.lerp(n, hs.select(1, t), z, out=hs.select(1, t + 1))
                if save:
                    per_step.append((gh, n))
                continue
            Wx_A, WhT_A, bx_A, bh_A = p.step_weights(wsel)
            A = WhT_A.shape[1] // 3
            if xs is not None:
                gx = _take(xs[t], wsel, 1)
            elif gid is not None:
                gx = gxs[gid][t]
            else:
                gx = torch.addmm(bx_A, p.x[:nb, t], Wx_A.T)
            gh = torch.addmm(bh_A, hprev, WhT_A)
            rz = gh[:, : 2 * A].add_(gx[:, : 2 * A]).sigmoid_()  # gh now holds [r | z | hn]
            n = torch.addcmul(gx[:, 2 * A :], rz[:, :A], gh[:, 2 * A :]).tanh_()
            hp = _take(hprev, hsel, 1)
            if p.unit and isinstance(hsel, slice):  # f written straight into the state
                torch.lerp(n, hp, rz[:, A:], out=hnext[:, hsel])
            else:
                f = torch.lerp(n, hp, rz[:, A:])
                _put(hnext, hsel, f if p.unit else torch.lerp(hp, f, p.gate(t, nb, hsel)))
            if save:
                per_step.append((gh, n))
    return out, saved, pk


class _SuGRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, plan):
        p = _Prepared(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lengths, plan)
        out, saved, pk = _forward(p, plan, save=True)
        ctx.p, ctx.plan, ctx.out_ext, ctx.saved, ctx.pk = p, plan, out, saved, pk
        ctx.has_b = (b_ih is not None, b_hh is not None)
        return _final_out(p, out)

    @staticmethod
    def backward(ctx, grad_out, grad_h):
        need = ctx.needs_input_grad
        grads = _backward(ctx.p, ctx.plan, ctx.pk, ctx.out_ext, ctx.saved, grad_out, grad_h, need)
        dx, dh0, dwi, dwh, dbi, dbh, dg = grads
        dbi = dbi if ctx.has_b[0] else None
        dbh = dbh if ctx.has_b[1] else None
        return dx, dh0, dwi, dwh, dbi, dbh, dg, None, None, None


def _final_out(p: _Prepared, out: torch.Tensor):
    o, h = out[:, 1:], out[:, p.T]
    if p.order is not None:
        o, h = o[p.inv_order], h[p.inv_order]
    return o, h


def _gate_grad(p: _Prepared, t, nb, sel, dhA, hp, n, z, dg) -> None:
    v = dhA * (torch.lerp(n, hp, z) - hp)
    if p.per_sample:
        v = v * _take(p.active[:nb, t], sel, 1)
        _put(dg[:nb, t], sel, v)
    elif isinstance(sel, slice):
        dg[t, sel] += v.sum(0)
    else:
        dg[t].index_add_(0, sel, v.sum(0))


def _backward(p: _Prepared, plan: Plan, pk, out, saved, grad_out, grad_h, need):
    B, T, D, H = p.B, p.T, p.D, p.H

    def sorted_(t: torch.Tensor | None, shape) -> torch.Tensor:
        if t is None:
            return out.new_zeros(shape)
        return t[p.order] if p.order is not None else t

    gop = sorted_(grad_out, (B, T, H))
    dh = sorted_(grad_h, (B, H)).clone()
    dx = p.x.new_zeros(B, T, D) if need[0] else None
    dWx, dWh = torch.zeros_like(p.Wx), torch.zeros_like(p.Wh)
    dbx, dbh = torch.zeros_like(p.bx), torch.zeros_like(p.bh)
    dg = torch.zeros_like(p.g) if need[6] else None
    if pk is not None:  # packed pre-activation gradients per group (see _Packing)
        dGx = [out.new_empty(len(r), 3 * (e - s)) for (s, e, _), r in zip(plan.groups, pk.rows_x)]
        dGh = [torch.empty_like(t) for t in dGx]
    for t in range(T - 1, -1, -1):
        dh += gop[:, t]
        nb = p.bs[t]
        if nb == 0:
            continue
        hprev, dht = out[:nb, t], dh[:nb]
        pending = []
        for (wsel, hsel, gid), (gh, n) in zip(plan.steps[t], saved[t]):
            A = n.shape[1]
            r, z, hn = gh[:, :A], gh[:, A : 2 * A], gh[:, 2 * A :]
            hp, dhA = _take(hprev, hsel, 1), _take(dht, hsel, 1)
            if dg is not None:
                _gate_grad(p, t, nb, hsel, dhA, hp, n, z, dg)
            if p.unit:
                df = dhA
                dhp = df * z
            else:
                df = dhA * p.gate(t, nb, hsel)
                dhp = torch.addcmul(dhA - df, df, z)
            dz = df * (hp - n)
            dan = (df - df * z) * (1 - n * n)
            dar = dan * hn * r * (1 - r)
            daz = dz * z * (1 - z)
            if gid is not None:
                off = pk.off[gid][t]
                dgx = torch.cat([dar, daz, dan], 1, out=dGx[gid][off : off + nb])
                dgh = torch.cat([dar, daz, dan * r], 1, out=dGh[gid][off : off + nb])
            else:
                dgx = torch.cat([dar, daz, dan], 1)
                dgh = torch.cat([dar, daz, dan * r], 1)
            _put(dht, hsel, dhp)
            pending.append((wsel, gid, dgx, dgh))
        for wsel, gid, dgx, dgh in pending:
            Wx_A, Wh_A, _, _ = p.weights(wsel)
            dht.addmm_(dgh, Wh_A)
            if gid is not None:
                continue
            if dx is not None:
                dx[:nb, t].addmm_(dgx, Wx_A)
            gwx, gwh = dgx.T @ p.x[:nb, t], dgh.T @ hprev
            if isinstance(wsel, slice):
                dWx[wsel] += gwx
                dWh[wsel] += gwh
                dbx[wsel] += dgx.sum(0)
                dbh[wsel] += dgh.sum(0)
            else:
                dWx.index_add_(0, wsel, gwx)
                dWh.index_add_(0, wsel, gwh)
                dbx.index_add_(0, wsel, dgx.sum(0))
                dbh.index_add_(0, wsel, dgh.sum(0))
    if pk is not None:
        _group_grads(p, plan, pk, out, dGx, dGh, dx, dWx, dWh, dbx, dbh)
    return _original_layout(p, plan, dx, dh, dWx, dWh, dbx, dbh, dg, need)


def _group_grads(p, plan, pk, out, dGx, dGh, dx, dWx, dWh, dbx, dbh):
    """Weight, bias and input gradients as one GEMM each per neuron group."""
    B, T, D, H = p.B, p.T, p.D, p.H
    x2, h2 = p.x.view(B * T, D), out.view(B * (T + 1), H)
    for (s, e, _), rx, rh, Gx, Gh in zip(plan.groups, pk.rows_x, pk.rows_h, dGx, dGh):
        if not len(rx):
            continue
        w = slice(3 * s, 3 * e)
        dWx[w].addmm_(Gx.T, x2.index_select(0, rx))  # += : gathered steps added theirs
        dWh[w].addmm_(Gh.T, h2.index_select(0, rh))
        dbx[w] += Gx.sum(0)
        dbh[w] += Gh.sum(0)
        if dx is not None:
            dx.view(B * T, D).index_add_(0, rx, Gx @ p.Wx[w])


def _original_layout(p, plan, dx, dh, dWx, dWh, dbx, dbh, dg, need):
    def back(t: torch.Tensor) -> torch.Tensor:
        if plan.lay is None:
            return t
        return torch.empty_like(t).index_copy_(0, plan.lay, t)

    dwi, dwh = (back(dWx) if need[2] else None), (back(dWh) if need[3] else None)
    dbi, dbh_ = (back(dbx) if need[4] else None), (back(dbh) if need[5] else None)
    dh0 = dh
    if p.order is not None:
        dh0 = dh0[p.inv_order]
        dx = dx[p.inv_order] if dx is not None else None
        if dg is not None and dg.dim() == 3:
            dg = dg[p.inv_order]
    return dx, dh0 if need[1] else None, dwi, dwh, dbi, dbh_, dg


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
        out, _, _ = _forward(p, plan, save=False)
        return _final_out(p, out)
