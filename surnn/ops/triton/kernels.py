"""Triton kernels of the selective-update GRU: one launch per step, forward and backward.

Each program owns a tile of BLOCK_B sequences x BLOCK_H neurons. The neurons of a tile
are not fixed: step t reads them from a per-step order (a permutation of the H neurons
with that step's active ones first, ``order[t]``; ``count[t]`` active), so the active
neurons of a step fill the first ceil(count/BLOCK_H) tiles wherever they sit in the layer
(scattered learned rhythms included), and the other tiles only carry the state over:
closed neurons cost no FLOPs and no weight traffic. Weight rows are loaded by neuron
index either way (each row contiguous along K). State
and accumulators are fp32, storage fp32 or bf16; selects use ``tl.where`` (a NaN in an
unused lane cannot leak), tanh is ``2*sigmoid(2x)-1``, and the step index and sequence
length are runtime arguments (never constexprs nor specialised on), so one compiled kernel
serves every step and every T. Offsets are 64-bit (the row index is int64, and the five
saved planes are separate pointers): B*T*H reaches 2**31 at Path-X sizes (T=16384,
H=512, B=256), where 32-bit offsets would wrap and address the wrong memory.

Set TRITON_INTERPRET=1 before importing this module to run it on the CPU (fp32 only).
Only builtin ``tl`` functions are used (``tl.full``, not the ``@jit`` standard library's
``tl.zeros``/``tl.sigmoid``), so the kernels also interpret correctly when ``triton`` was
imported (e.g. by torch) before the flag was set.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit(do_not_specialize=["t", "T"])
def fwd_step(
    x_ptr,
    wx_ptr,
    wh_ptr,
    bx_ptr,
    bh_ptr,
    g_ptr,
    a_ptr,
    len_ptr,
    order_ptr,
    cnt_ptr,
    hs_ptr,
    out_ptr,
    sr_ptr,
    sz_ptr,
    sn_ptr,
    shn_ptr,
    shp_ptr,
    t,
    B,
    T,
    D,
    H,
    sgb,
    sab,
    SAVE: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """h_t for one (batch tile, neuron tile); hs is the fp32 state ping-pong [2, B, H];
    with SAVE, r, z, n, hn and h_{t-1} go to the five fp32 [B, T, H] planes s*_ptr."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)  # 64-bit offsets
    pos = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)  # places in this step's neuron order
    cmask = pos < H
    cols = tl.load(order_ptr + t * H + pos, mask=cmask, other=0)  # the neurons themselves
    rmask = rows < B
    m2 = rmask[:, None] & cmask[None, :]
    src = t % 2
    hin = hs_ptr + src * B * H
    hout = hs_ptr + (1 - src) * B * H
    tile = rows[:, None] * H + cols[None, :]
    hp = tl.load(hin + tile, mask=m2, other=0.0)
    seq = rows[:, None] * (T * H) + t * H + cols[None, :]  # [B, T, H] offsets (int64)
    if SAVE:
        tl.store(shp_ptr + seq, hp, mask=m2)
    hnew = hp
    if pid_h * BLOCK_H < tl.load(cnt_ptr + t):  # the tile holds active neurons
        acc_r = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
        acc_z = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
        acc_xn = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
        acc_hn = tl.full((BLOCK_B, BLOCK_H), 0.0, tl.float32)
        kk = tl.arange(0, BLOCK_K)
        for k0 in range(0, D, BLOCK_K):
            k = k0 + kk
            km = k < D
            xt = tl.load(
                x_ptr + rows[:, None] * (T * D) + t * D + k[None, :],
                mask=rmask[:, None] & km[None, :],
                other=0.0,
            )
            wm = km[:, None] & cmask[None, :]
            wp = wx_ptr + cols[None, :] * D + k[:, None]
            acc_r += _dot(xt, tl.load(wp, mask=wm, other=0.0), IEEE)
            acc_z += _dot(xt, tl.load(wp + H * D, mask=wm, other=0.0), IEEE)
            acc_xn += _dot(xt, tl.load(wp + 2 * H * D, mask=wm, other=0.0), IEEE)
        for k0 in range(0, H, BLOCK_K):
            k = k0 + kk
            km = k < H
            ht = tl.load(
                hin + rows[:, None] * H + k[None, :], mask=rmask[:, None] & km[None, :], other=0.0
            ).to(wh_ptr.dtype.element_ty)
            wm = km[:, None] & cmask[None, :]
            wp = wh_ptr + cols[None, :] * H + k[:, None]
            acc_r += _dot(ht, tl.load(wp, mask=wm, other=0.0), IEEE)
            acc_z += _dot(ht, tl.load(wp + H * H, mask=wm, other=0.0), IEEE)
            acc_hn += _dot(ht, tl.load(wp + 2 * H * H, mask=wm, other=0.0), IEEE)
        bxr = tl.load(bx_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        bxz = tl.load(bx_ptr + H + cols, mask=cmask, other=0.0).to(tl.float32)
        bxn = tl.load(bx_ptr + 2 * H + cols, mask=cmask, other=0.0).to(tl.float32)
        bhr = tl.load(bh_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        bhz = tl.load(bh_ptr + H + cols, mask=cmask, other=0.0).to(tl.float32)
        bhn = tl.load(bh_ptr + 2 * H + cols, mask=cmask, other=0.0).to(tl.float32)
        r = _sigmoid(acc_r + (bxr + bhr)[None, :])
        z = _sigmoid(acc_z + (bxz + bhz)[None, :])
        hn = acc_hn + bhn[None, :]
        n = _tanh(acc_xn + bxn[None, :] + r * hn)
        f = n + z * (hp - n)
        gv = tl.load(g_ptr + rows[:, None] * sgb + t * H + cols[None, :], mask=m2, other=0.0)
        av = tl.load(a_ptr + rows[:, None] * sab + t * H + cols[None, :], mask=m2, other=0)
        ln = tl.load(len_ptr + rows, mask=rmask, other=0)
        upd = (av != 0) & (t < ln)[:, None] & m2
        hnew = tl.where(upd, hp + gv.to(tl.float32) * (f - hp), hp)
        if SAVE:
            tl.store(sr_ptr + seq, r, mask=m2)
            tl.store(sz_ptr + seq, z, mask=m2)
            tl.store(sn_ptr + seq, n, mask=m2)
            tl.store(shn_ptr + seq, hn, mask=m2)
    tl.store(hout + tile, hnew, mask=m2)
    tl.store(out_ptr + seq, hnew.to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit(do_not_specialize=["t", "T"])
def bwd_point(
    dh_ptr,
    dhn_ptr,
    sr_ptr,
    sz_ptr,
    sn_ptr,
    shn_ptr,
    shp_ptr,
    g_ptr,
    a_ptr,
    len_ptr,
    order_ptr,
    cnt_ptr,
    dgx_ptr,
    dgh_ptr,
    dg_ptr,
    t,
    B,
    T,
    H,
    sgb,
    sab,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Pointwise backward of step t: pre-activation grads (dgx, dgh [B, T, 3H]), gate grad
    dg [B, T, H], and the direct part of dL/dh_{t-1} into dhn."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)  # 64-bit offsets
    pos = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    cmask = pos < H
    cols = tl.load(order_ptr + t * H + pos, mask=cmask, other=0)
    rmask = rows < B
    m2 = rmask[:, None] & cmask[None, :]
    tile = rows[:, None] * H + cols[None, :]
    dh = tl.load(dh_ptr + tile, mask=m2, other=0.0)
    dhnew = dh
    if pid_h * BLOCK_H < tl.load(cnt_ptr + t):
        seq = rows[:, None] * (T * H) + t * H + cols[None, :]
        r = tl.load(sr_ptr + seq, mask=m2, other=0.0)
        z = tl.load(sz_ptr + seq, mask=m2, other=0.0)
        n = tl.load(sn_ptr + seq, mask=m2, other=0.0)
        hn = tl.load(shn_ptr + seq, mask=m2, other=0.0)
        hp = tl.load(shp_ptr + seq, mask=m2, other=0.0)
        gv = tl.load(g_ptr + rows[:, None] * sgb + t * H + cols[None, :], mask=m2, other=0.0)
        av = tl.load(a_ptr + rows[:, None] * sab + t * H + cols[None, :], mask=m2, other=0)
        ln = tl.load(len_ptr + rows, mask=rmask, other=0)
        upd = (av != 0) & (t < ln)[:, None] & m2
        gv = gv.to(tl.float32)
        f = n + z * (hp - n)
        df = dh * gv
        dz = df * (hp - n)
        dan = (df - df * z) * (1.0 - n * n)
        dar = dan * hn * r * (1.0 - r)
        daz = dz * z * (1.0 - z)
        dar = tl.where(upd, dar, 0.0)
        daz = tl.where(upd, daz, 0.0)
        dan = tl.where(upd, dan, 0.0)
        dhnew = tl.where(upd, dh - df + df * z, dh)
        g3 = rows[:, None] * (T * 3 * H) + t * 3 * H + cols[None, :]
        tl.store(dgx_ptr + g3, dar, mask=m2)
        tl.store(dgx_ptr + g3 + H, daz, mask=m2)
        tl.store(dgx_ptr + g3 + 2 * H, dan, mask=m2)
        tl.store(dgh_ptr + g3, dar, mask=m2)
        tl.store(dgh_ptr + g3 + H, daz, mask=m2)
        tl.store(dgh_ptr + g3 + 2 * H, dan * r, mask=m2)
        tl.store(dg_ptr + seq, tl.where(upd, dh * (f - hp), 0.0), mask=m2)
    tl.store(dhn_ptr + tile, dhnew, mask=m2)


@triton.jit(do_not_specialize=["t", "T"])
def bwd_matmul(
    dhn_ptr,
    dgh_ptr,
    wh_ptr,
    order_ptr,
    cnt_ptr,
    go_ptr,
    t,
    B,
    T,
    H,
    IEEE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """dL/dh_{t-1} += dgh_t @ W_hh over the active neurons of step t only (BLOCK_H of
    them at a time, in the step's order), plus the output gradient at t-1."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)  # 64-bit offsets
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    rmask = rows < B
    cmask = cols < H
    m2 = rmask[:, None] & cmask[None, :]
    tile = rows[:, None] * H + cols[None, :]
    acc = tl.load(dhn_ptr + tile, mask=m2, other=0.0)
    nact = tl.load(cnt_ptr + t)
    for j0 in range(0, nact, BLOCK_H):
        npos = j0 + tl.arange(0, BLOCK_H)
        nm = npos < nact
        nrow = tl.load(order_ptr + t * H + npos, mask=nm, other=0)
        am = rmask[:, None] & nm[None, :]
        wm = nm[:, None] & cmask[None, :]
        base = dgh_ptr + rows[:, None] * (T * 3 * H) + t * 3 * H + nrow[None, :]
        wp = wh_ptr + nrow[:, None] * H + cols[None, :]
        for gate in tl.static_range(3):
            a = tl.load(base + gate * H, mask=am, other=0.0)
            w = tl.load(wp + gate * H * H, mask=wm, other=0.0)
            acc += _dot(a.to(w.dtype), w, IEEE)
    if t > 0:
        acc += tl.load(
            go_ptr + rows[:, None] * (T * H) + (t - 1) * H + cols[None, :], mask=m2, other=0.0
        ).to(tl.float32)
    tl.store(dhn_ptr + tile, acc, mask=m2)
