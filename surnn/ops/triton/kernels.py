"""Triton kernels of the selective-update GRU: the sequential part only, one launch per step.

The input projection x_t W_ih^T of every step is a GEMM per chunk of C steps, outside these
kernels (loops.py); so are the backward's recomputed pre-activations and its weight and input
gradients. What is left per step is the recurrent part:

``fwd_step``: for a tile of BLOCK_B sequences x BLOCK_H neurons, h_{t-1} W_hh^T over K = H
(the three gates), then the GRU pointwise update. The neurons of a tile come from the step's
order (a permutation with that step's active neurons first, ``order[j]``; ``cnt[j]`` of them
active), so the active neurons fill the first ceil(cnt/BLOCK_H) tiles wherever they sit in
the layer, and the other tiles only copy the state into the output: closed neurons cost no
FLOPs and no weight traffic.

``bwd_step``: for a tile of BLOCK_B sequences x BLOCK_H neurons (natural order), dL/dh_t =
dL/d out_t + the carried direct part + (the pre-activation gradients of step t+1) W_hh over
K = 3 x the active neurons of step t+1, then the pointwise backward of step t on the tile,
which writes step t's pre-activation gradients (for the next launch and the GEMMs) and the
gate gradient. The launch with j = -1 writes dL/dh_0.

Split-K: a tile's reduction may be spread over S programs (grid axis 2; S from the step's
active count, ``_splits``, the formula of launch.splits). Each writes its partial sums to a
workspace, then increments the tile's arrival counter (release after a CTA barrier); the
program that arrives last (acquire) adds the partials in split order, so the result does not
depend on which program finishes last, resets the counter for the next step and runs the
pointwise part. With S = 1 nothing goes through the workspace.

Buffers are per chunk of C steps, time-major (slot j = step t0 + j), with rows of HP >= H
elements (H rounded up to 16, so that every row starts 16-element aligned and the dots'
operands load as vectors through asynchronous copies whatever H is; the padding columns are
zero, as are the padded weights'): every tensor a kernel reads was written by an earlier
launch or copied in by loops.py; the state is fp32 [B, HP], updated in place tile by tile (the dot reads h_{t-1} from the output slot j, never from the
state, so no program reads what another writes in the same launch). The step's dot operand is
h_{t-1} in the storage dtype (bf16 or fp32), accumulation fp32. Masks (u8): bit 0 = the
update is computed at (t, neuron[, sequence]) (active or open), bit 1 = the gate gets a
gradient there (active); the sequence's length closes padding steps. Selects use ``tl.where``
(a NaN in an unused lane cannot leak), tanh is ``2*sigmoid(2x)-1``; the step slot is a
runtime argument (never specialised), so one compiled kernel serves every step. Offsets are
32-bit: the kernels touch only chunk buffers, which loops.py keeps under 2**31 elements (the
[B, T, H] tensors of Path-X sizes, past 2**31 elements, are only copied by torch).

Set TRITON_INTERPRET=1 before importing this module to run it on the CPU (fp32 only). Only
builtin ``tl`` functions are used (``tl.full`` and ``tl.reduce``, not ``tl.zeros``,
``tl.sigmoid`` or ``tl.sum`` of the ``@jit`` standard library), so the kernels also interpret correctly when ``triton`` was
imported (e.g. by torch) before the flag was set.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, acc, F32: tl.constexpr, PREC: tl.constexpr):
    if F32:
        return tl.dot(a, b, acc, input_precision=PREC)
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _lanes(pid, n, BLOCK: tl.constexpr):
    """The BLOCK indices of tile ``pid`` along one axis, and which of them are < n."""
    i = pid * BLOCK + tl.arange(0, BLOCK)
    return i, i < n


@triton.jit
def _zeros(BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    return tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)


@triton.jit
def _ws(ws_ptr, s, N: tl.constexpr, rows, cols, B, HP):
    """Split s's partial sums in the workspace [SPLIT, N, B, HP]: the tile's first of N."""
    return ws_ptr + (s * N * B + rows)[:, None] * HP + cols[None, :]


@triton.jit
def _partial(p, m2):
    """A partial sum another program stored, read from L2 (``.cg``: another SM wrote it, and
    L1 is not coherent across SMs)."""
    return tl.load(p, mask=m2, other=0.0, cache_modifier=".cg")


@triton.jit
def _splits(work, nkb, n_sm, SPLIT: tl.constexpr, MIN_KB: tl.constexpr):
    """Programs per tile (launch.splits): fill one wave of n_sm programs, at most SPLIT, at
    least MIN_KB K blocks each, at least 1."""
    s = n_sm // tl.maximum(work, 1)
    s = tl.minimum(tl.minimum(s, nkb // MIN_KB), SPLIT)
    return tl.maximum(s, 1)


@triton.jit
def _arrive(sem_ptr, tile, S):
    """After this program stored its partial sums: count it in; True for the last one (which
    resets the counter for the next launch)."""
    tl.debug_barrier()  # every thread's partial stores precede the release below
    old = tl.atomic_add(sem_ptr + tile, 1, sem="acq_rel", scope="gpu")
    last = old == S - 1
    if last:
        tl.atomic_xchg(sem_ptr + tile, 0, sem="relaxed", scope="gpu")
    return last


@triton.jit(do_not_specialize=["j"])
def fwd_step(
    xp_ptr,
    a_ptr,
    hs_ptr,
    wh_ptr,
    bias_ptr,
    g_ptr,
    act_ptr,
    lrel_ptr,
    nval_ptr,
    order_ptr,
    cnt_ptr,
    plane_ptr,
    ws_ptr,
    sem_ptr,
    j,
    B,
    H,
    HP,
    sgt,
    sgb,
    n_sm,
    SAVE: tl.constexpr,
    F32: tl.constexpr,
    PREC: tl.constexpr,
    SPLIT: tl.constexpr,
    MIN_KB: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Step t0 + j. xp [C, B, 3HP] fp32: x W_ih^T (no bias); a [C+1, B, HP] (storage dtype):
    slot j holds h_{t-1}, slot j+1 receives h_t; hs [B, HP] fp32 state; wh [3HP, HP]; bias
    [4, H] fp32 (b_ir+b_hr, b_iz+b_hz, b_in, b_hn); g, act: the chunk's gate and mask
    (element (j, b, n) at j*sgt + b*sgb + n); lrel [B] lengths - t0; nval: steps of this
    chunk; order [C+1, HP], cnt [C+1]; plane [C, B, HP] fp32 h_t (SAVE); ws [SPLIT, 3, B, HP]
    fp32 and sem (one counter per tile) for split-K."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    if j < tl.load(nval_ptr):
        cnt = tl.load(cnt_ptr + j)
        nat = (cnt + BLOCK_H - 1) // BLOCK_H  # tiles holding active neurons
        rows, rmask = _lanes(pid_b, B, BLOCK_B)
        pos, cmask = _lanes(pid_h, H, BLOCK_H)  # places in this step's neuron order
        m2 = rmask[:, None] & cmask[None, :]
        if pid_h < nat:
            nkb = (HP + BLOCK_K - 1) // BLOCK_K
            S = _splits(nat * tl.num_programs(1), nkb, n_sm, SPLIT, MIN_KB)
            if pid_s < S:
                cols = tl.load(order_ptr + j * HP + pos, mask=cmask, other=0)  # the neurons
                per = (nkb + S - 1) // S
                k_lo = pid_s * per * BLOCK_K
                k_hi = tl.minimum(k_lo + per * BLOCK_K, HP)
                acc_r = _zeros(BLOCK_B, BLOCK_H)
                acc_z = _zeros(BLOCK_B, BLOCK_H)
                acc_n = _zeros(BLOCK_B, BLOCK_H)
                kk = tl.arange(0, BLOCK_K)
                a_off = (j * B + rows)[:, None] * HP + kk[None, :]
                w_off = cols[None, :] * HP + kk[:, None]
                for k0 in range(k_lo, k_hi, BLOCK_K):
                    km = (k0 + kk) < HP  # the padding columns are zero: no mask within a row
                    at = tl.load(a_ptr + a_off + k0, mask=rmask[:, None] & km[None, :], other=0.0)
                    wm = km[:, None] & cmask[None, :]
                    wp = wh_ptr + w_off + k0
                    acc_r = _dot(at, tl.load(wp, mask=wm, other=0.0), acc_r, F32, PREC)
                    acc_z = _dot(at, tl.load(wp + HP * HP, mask=wm, other=0.0), acc_z, F32, PREC)
                    acc_n = _dot(
                        at, tl.load(wp + 2 * HP * HP, mask=wm, other=0.0), acc_n, F32, PREC
                    )
                last = S == 1
                if S > 1:
                    ws = _ws(ws_ptr, pid_s, 3, rows, pos, B, HP)
                    tl.store(ws, acc_r, mask=m2)
                    tl.store(ws + B * HP, acc_z, mask=m2)
                    tl.store(ws + 2 * B * HP, acc_n, mask=m2)
                    last = _arrive(sem_ptr, pid_b * tl.num_programs(0) + pid_h, S)
                    if last:  # add the partials in split order (the same sum whoever is last)
                        acc_r = _zeros(BLOCK_B, BLOCK_H)
                        acc_z = _zeros(BLOCK_B, BLOCK_H)
                        acc_n = _zeros(BLOCK_B, BLOCK_H)
                        for s2 in range(0, S):
                            p = _ws(ws_ptr, s2, 3, rows, pos, B, HP)
                            acc_r += _partial(p, m2)
                            acc_z += _partial(p + B * HP, m2)
                            acc_n += _partial(p + 2 * B * HP, m2)
                if last:  # the GRU update of the tile, given its three recurrent dot products
                    xb = xp_ptr + (j * B + rows)[:, None] * (3 * HP) + cols[None, :]
                    r = _sigmoid(
                        acc_r
                        + tl.load(xb, mask=m2, other=0.0)
                        + tl.load(bias_ptr + cols, mask=cmask, other=0.0)[None, :]
                    )
                    z = _sigmoid(
                        acc_z
                        + tl.load(xb + HP, mask=m2, other=0.0)
                        + tl.load(bias_ptr + H + cols, mask=cmask, other=0.0)[None, :]
                    )
                    hn = acc_n + tl.load(bias_ptr + 3 * H + cols, mask=cmask, other=0.0)[None, :]
                    n = _tanh(
                        tl.load(xb + 2 * HP, mask=m2, other=0.0)
                        + tl.load(bias_ptr + 2 * H + cols, mask=cmask, other=0.0)[None, :]
                        + r * hn
                    )
                    hst = rows[:, None] * HP + cols[None, :]
                    hp = tl.load(hs_ptr + hst, mask=m2, other=0.0)
                    gat = j * sgt + rows[:, None] * sgb + cols[None, :]
                    gv = tl.load(g_ptr + gat, mask=m2, other=0.0).to(tl.float32)
                    av = tl.load(act_ptr + gat, mask=m2, other=0)
                    lr = tl.load(lrel_ptr + rows, mask=rmask, other=0)
                    upd = ((av & 1) != 0) & (j < lr)[:, None] & m2
                    hnew = tl.where(upd, hp + gv * (1.0 - z) * (n - hp), hp)  # h + g * (f - h)
                    tl.store(hs_ptr + hst, hnew, mask=m2)
                    tl.store(
                        a_ptr + hst + (j + 1) * B * HP, hnew.to(a_ptr.dtype.element_ty), mask=m2
                    )
                    if SAVE:
                        tl.store(plane_ptr + hst + j * B * HP, hnew, mask=m2)
        else:
            if pid_s == 0:  # a closed tile: the state carries over into the output
                cols = tl.load(order_ptr + j * HP + pos, mask=cmask, other=0)
                hst = rows[:, None] * HP + cols[None, :]
                hp = tl.load(hs_ptr + hst, mask=m2, other=0.0)
                tl.store(a_ptr + hst + (j + 1) * B * HP, hp.to(a_ptr.dtype.element_ty), mask=m2)
                if SAVE:
                    tl.store(plane_ptr + hst + j * B * HP, hp, mask=m2)


@triton.jit(do_not_specialize=["j"])
def bwd_step(
    dgp_ptr,
    dgo_ptr,
    wh_ptr,
    order_ptr,
    inv_ptr,
    cnt_ptr,
    xp_ptr,
    gh_ptr,
    hp_ptr,
    bias_ptr,
    g_ptr,
    act_ptr,
    lrel_ptr,
    nval_ptr,
    go_ptr,
    dc_ptr,
    dg_ptr,
    dh0_ptr,
    ws_ptr,
    sem_ptr,
    j,
    B,
    H,
    HP,
    sgt,
    sgb,
    n_sm,
    PER_SAMPLE: tl.constexpr,
    F32: tl.constexpr,
    PREC: tl.constexpr,
    SPLIT: tl.constexpr,
    MIN_KB: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Step t0 + j backwards (j = -1: dL/dh_0 only). dgp [C, B, 4HP] (storage dtype): slot j
    receives step t's pre-activation gradients in neuron order for the GEMMs (r, z, n input
    side, n hidden side = n input side * r); dgo [C+1, B, 3HP]: the same hidden-side ones
    (r, z, n*r) at each neuron's place in the step's order (``inv``, [C, HP]), so that step
    t+1's, read from slot j+1 in order, are contiguous (a closed neuron's are zeros, so the
    reduction may run past the active count to a whole block); order [C+1, HP], cnt [C+1];
    xp, gh [C, B, 3HP] fp32: x_t W_ih^T and h_{t-1} W_hh^T (no bias, recomputed by GEMMs); hp
    [C, B, HP] fp32 h_{t-1}; go [C, B, HP] dL/d out; dc [B, HP] fp32 the direct part of dL/dh
    carried from step t+1, in place; dg: the gate gradient, [C, B, HP] per sample or
    [C, n_bt, HP] fp32 sums over the tile's sequences; dh0 [B, HP] fp32; ws [SPLIT, B, HP],
    sem: split-K."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    if j < tl.load(nval_ptr):
        cn = tl.load(cnt_ptr + j + 1)  # step t+1's active neurons (0 past the last step)
        nkb = (cn + BLOCK_K - 1) // BLOCK_K
        S = _splits(tl.num_programs(0) * tl.num_programs(1), nkb, n_sm, SPLIT, MIN_KB)
        if pid_s < S:
            rows, rmask = _lanes(pid_b, B, BLOCK_B)
            cols, cmask = _lanes(pid_h, H, BLOCK_H)
            m2 = rmask[:, None] & cmask[None, :]
            # one accumulator per gate, as in the forward: a single accumulator chained
            # through three dots makes Triton put every warp along M (repeating the MMAs of a
            # 64-row tile on 8 warps)
            acc_r = _zeros(BLOCK_B, BLOCK_H)
            acc_z = _zeros(BLOCK_B, BLOCK_H)
            acc_n = _zeros(BLOCK_B, BLOCK_H)
            per = (nkb + S - 1) // S
            p_lo = pid_s * per * BLOCK_K
            p_hi = tl.minimum(p_lo + per * BLOCK_K, nkb * BLOCK_K)
            kk = tl.arange(0, BLOCK_K)
            a_off = ((j + 1) * B + rows)[:, None] * (3 * HP) + kk[None, :]
            for p0 in range(p_lo, p_hi, BLOCK_K):
                pm = (p0 + kk) < HP  # places up to a whole block: closed ones hold zeros
                nr = tl.load(order_ptr + (j + 1) * HP + p0 + kk, mask=pm, other=0)
                am = rmask[:, None] & pm[None, :]
                wm = pm[:, None] & cmask[None, :]
                wp = wh_ptr + nr[:, None] * HP + cols[None, :]
                ap = dgo_ptr + a_off + p0
                acc_r = _dot(
                    tl.load(ap, mask=am, other=0.0),
                    tl.load(wp, mask=wm, other=0.0),
                    acc_r,
                    F32,
                    PREC,
                )
                acc_z = _dot(
                    tl.load(ap + HP, mask=am, other=0.0),
                    tl.load(wp + HP * HP, mask=wm, other=0.0),
                    acc_z,
                    F32,
                    PREC,
                )
                acc_n = _dot(
                    tl.load(ap + 2 * HP, mask=am, other=0.0),
                    tl.load(wp + 2 * HP * HP, mask=wm, other=0.0),
                    acc_n,
                    F32,
                    PREC,
                )
            acc = acc_r + acc_z + acc_n
            last = S == 1
            if S > 1:
                tl.store(_ws(ws_ptr, pid_s, 1, rows, cols, B, HP), acc, mask=m2)
                last = _arrive(sem_ptr, pid_b * tl.num_programs(0) + pid_h, S)
                if last:
                    acc = _zeros(BLOCK_B, BLOCK_H)
                    for s2 in range(0, S):
                        acc += _partial(_ws(ws_ptr, s2, 1, rows, cols, B, HP), m2)
            if last:
                tile = rows[:, None] * HP + cols[None, :]
                dlt = acc + tl.load(dc_ptr + tile, mask=m2, other=0.0)
                if j < 0:
                    tl.store(dh0_ptr + tile, dlt, mask=m2)
                else:  # the pointwise backward of step t0 + j on the tile
                    at = tile + j * B * HP
                    dh = dlt + tl.load(go_ptr + at, mask=m2, other=0.0).to(tl.float32)  # dL/dh_t
                    gat = j * sgt + rows[:, None] * sgb + cols[None, :]
                    av = tl.load(act_ptr + gat, mask=m2, other=0)
                    lr = tl.load(lrel_ptr + rows, mask=rmask, other=0)
                    live = m2 & (j < lr)[:, None]
                    upd = live & ((av & 1) != 0)
                    gm = live & ((av & 2) != 0)  # bit 1: the gate has a gradient here
                    x3 = (j * B + rows)[:, None] * (3 * HP) + cols[None, :]
                    pr = tl.load(xp_ptr + x3, mask=upd, other=0.0)
                    pr += tl.load(gh_ptr + x3, mask=upd, other=0.0)
                    r = _sigmoid(pr + tl.load(bias_ptr + cols, mask=cmask, other=0.0)[None, :])
                    pz = tl.load(xp_ptr + x3 + HP, mask=upd, other=0.0)
                    pz += tl.load(gh_ptr + x3 + HP, mask=upd, other=0.0)
                    z = _sigmoid(pz + tl.load(bias_ptr + H + cols, mask=cmask, other=0.0)[None, :])
                    hn = tl.load(gh_ptr + x3 + 2 * HP, mask=upd, other=0.0)
                    hn += tl.load(bias_ptr + 3 * H + cols, mask=cmask, other=0.0)[None, :]
                    pn = tl.load(xp_ptr + x3 + 2 * HP, mask=upd, other=0.0)
                    n = _tanh(
                        pn
                        + tl.load(bias_ptr + 2 * H + cols, mask=cmask, other=0.0)[None, :]
                        + r * hn
                    )
                    gv = tl.load(g_ptr + gat, mask=upd, other=0.0).to(tl.float32)
                    nh = n - tl.load(hp_ptr + at, mask=upd, other=0.0)  # n - h_{t-1}
                    df = dh * gv
                    tl.store(dc_ptr + tile, tl.where(upd, dh - df + df * z, dh), mask=m2)
                    dgv = tl.where(gm, dh * (1.0 - z) * nh, 0.0)  # dL/dg = dL/dh_t * (f - h_{t-1})
                    if PER_SAMPLE:
                        tl.store(dg_ptr + at, dgv.to(dg_ptr.dtype.element_ty), mask=m2)
                    else:
                        tl.store(
                            dg_ptr + (j * tl.num_programs(1) + pid_b) * HP + cols,
                            tl.reduce(dgv, 0, _add),
                            mask=cmask,
                        )
                    dan = tl.where(upd, (df - df * z) * (1.0 - n * n), 0.0)
                    dar = tl.where(upd, dan * hn * r * (1.0 - r), 0.0)
                    daz = tl.where(upd, -df * nh * z * (1.0 - z), 0.0)
                    dnr = dan * r
                    ety = dgp_ptr.dtype.element_ty
                    d4 = dgp_ptr + (j * B + rows)[:, None] * (4 * HP) + cols[None, :]
                    tl.store(d4, dar.to(ety), mask=m2)
                    tl.store(d4 + HP, daz.to(ety), mask=m2)
                    tl.store(d4 + 2 * HP, dan.to(ety), mask=m2)
                    tl.store(d4 + 3 * HP, dnr.to(ety), mask=m2)
                    # the gradients at each neuron's place in step t's order
                    pos = tl.load(inv_ptr + j * HP + cols, mask=cmask, other=0)
                    d3 = dgo_ptr + (j * B + rows)[:, None] * (3 * HP) + pos[None, :]
                    tl.store(d3, dar.to(ety), mask=m2)
                    tl.store(d3 + HP, daz.to(ety), mask=m2)
                    tl.store(d3 + 2 * HP, dnr.to(ety), mask=m2)
