"""torch.library registration of the Triton selective-update GRU (kernels.py: the sequential
part, launch.py: the launch model). Without a GPU it runs under the Triton interpreter
(TRITON_INTERPRET=1), where the tests check it against the reference; its CUDA tests run on a
GPU (scripts/gpu_check.sh).

A call runs in chunks of C steps (launch.chunk_len), on chunk-sized, time-major buffers:

forward, per chunk: the input projection x W_ih^T of the chunk's C*B rows as one GEMM
(cuBLAS, tensor cores: bf16 inputs with fp32 output, or fp32/TF32 as torch's matmul settings
say), then C launches of ``fwd_step`` (the recurrent part of the active neurons only), then
the outputs copied into the [B, T, H] result. Saved for the backward: the output (the state
in the storage dtype) and, for bf16, the fp32 state [B, T, H]; nothing else (r, z, n are
recomputed).

backward, per chunk from the last: the recomputed pre-activations x W_ih^T and h_{t-1} W_hh^T
as two GEMMs, C launches of ``bwd_step`` (dL/dh through the active neurons only, pointwise
gradients), then the weight and input gradients of the chunk as GEMMs over its C*B rows
(bf16 GEMMs with fp32 outputs accumulated in fp32 for bf16 runs), or over the rows of its open
steps only where at least a quarter of its steps compute no neuron (launch.py, closed steps;
the host learns which steps those are from one copy queued before the first chunk's work).

Memory of a training call (launch.memory_bytes; the README states the formula): the
[B, T, H] output, the fp32 state for bf16, dx, and chunk buffers independent of T; Path-X
(B=256, T=16384, D=H=512, bf16) needs about 18 GB instead of the 95 GB of a design that
keeps five fp32 planes and two [B, T, 3H] fp32 gradient planes.

CUDA graphs (graphs.py) capture one chunk of C launches per direction and shape, on a key's
second use, and serve every T. Every buffer comes from ``_empty``: tests set ``FILL`` so that
fresh buffers hold NaN (and integers -1), which a kernel reading an unwritten position turns
into a wrong result. ``precision`` for fp32: "ieee", "tf32" or "tf32x3" for the in-kernel dots;
None follows ``torch.backends.cuda.matmul.allow_tf32``, which also rules the GEMMs.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.flop_counter import register_flop_formula

from surnn.ops.triton import graphs as _graphs
from surnn.ops.triton import launch
from surnn.utils import valid_mask

PRECISIONS = ("ieee", "tf32", "tf32x3")
FILL: float | None = None  # tests: NaN, so that fresh buffers never read as zeros
N_SM: int | None = None  # tests: a small machine, so that the interpreter runs split-K
TIMER = None  # scripts/gpu_check.py: times the phases (``span(name)``, a context manager)


def phase(name: str):
    """A phase of a call, timed when TIMER is set: fwd_gemm, fwd_steps, bwd_gemm_recompute,
    bwd_steps, bwd_gemm_grads (the rest of a call is copies and bookkeeping)."""
    return TIMER.span(name) if TIMER is not None else contextlib.nullcontext()


def _kernels():
    from surnn.ops.triton import kernels  # imported late: TRITON_INTERPRET is read then

    return kernels


def _empty(shape, dtype, device) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device)
    if FILL is not None and t.device.type != "meta":
        t.fill_(FILL if t.is_floating_point() else -1)
    return t


def _n_sm(device: torch.device) -> int:
    if N_SM is not None:
        return N_SM
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return launch.N_SM


def _arch(device: torch.device) -> int:
    """The compute capability (major * 10 + minor) the kernels are built for: the device's on
    CUDA, else 90 (the design target, also what the interpreter tests run)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return 10 * major + minor
    return 90


def precision_for(dtype: torch.dtype, precision: str | None) -> str:
    """The in-kernel dot precision of an fp32 run (ignored for bf16)."""
    if precision is None:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def _order(act: torch.Tensor, H: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step, the neurons with the computed ones first (int32 [T, H], a permutation of
    0..H-1 per row, stable), and how many are computed ([T] int32). ``act``: the u8 mask
    (bit 0: computed); a per-sample mask counts a neuron when any sequence needs it."""
    a = (act & 1) != 0
    a = a.any(0) if a.dim() == 3 else a
    a = a.reshape(T, H)
    order = torch.sort((~a).to(torch.int8), dim=1, stable=True).indices
    return order.to(torch.int32).contiguous(), a.sum(1).to(torch.int32).contiguous()


def _mm32(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b with an fp32 result: bf16 tensor-core GEMMs with fp32 output on CUDA."""
    if a.dtype == torch.float32:
        return torch.mm(a, b, out=out)
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32, out=out)
    return torch.mm(a.float(), b.float(), out=out)


def _bias4(b_ih: torch.Tensor, b_hh: torch.Tensor, H: int) -> torch.Tensor:
    """[4, H] fp32: b_ir + b_hr, b_iz + b_hz, b_in, b_hn."""
    bi, bh = b_ih.float().view(3, H), b_hh.float().view(3, H)
    return torch.cat([bi[:2] + bh[:2], bi[2:], bh[2:]]).contiguous()


def _t(src: torch.Tensor) -> torch.Tensor:
    """[B, n, ...] -> its time-major view [n, B, ...]."""
    return src.transpose(0, 1)


def _pad_rows(w: torch.Tensor, H: int, HP: int) -> torch.Tensor:
    """[3H, K] gate-stacked weights -> [3HP, K], each gate's rows at g*HP, zeros between."""
    if HP == H:
        return w
    out = w.new_zeros(3, HP, w.shape[-1])
    out[:, :H] = w.view(3, H, -1)
    return out.view(3 * HP, -1)


def _zero_pads(t: torch.Tensor, H: int, HP: int) -> torch.Tensor:
    """Zero the padding columns of a buffer whose last dimension holds blocks of HP."""
    if HP != H:
        t.view(*t.shape[:-1], -1, HP)[..., H:].zero_()
    return t


class _Loop:
    """One direction of one call, run by graphs.run: ``alloc`` the chunk buffers, ``begin``,
    per chunk ``load`` (copies in, GEMMs), ``launches`` (the kernels: what a CUDA graph
    captures) and ``store`` (copies out, GEMMs), then ``end``. Rows of the chunk buffers hold
    HP = H rounded up to 16 elements, the padding zero (kernels.py)."""

    buffers = ""  # the kernel's pointer arguments in its order, less "_ptr": buffer names
    written: tuple[str, ...] = ()  # buffers the kernels write (restored after the warm-up)
    compared: tuple[str, ...] = ()  # compared bit for bit between warm-up and first replay

    def __init__(self, x, H, g, prec):
        self.B, self.T, self.D = x.shape
        self.H, self.HP, self.dtype, self.dev = H, -(-H // 16) * 16, x.dtype, x.device
        self.ps = g.dim() == 3
        self.gdtype = g.dtype
        self.f32 = x.dtype == torch.float32
        self.lp = launch.plan(
            self.B, H, self.T, _n_sm(x.device), prec if self.f32 else "bf16", _arch(x.device)
        )
        self.C = self.lp.chunk
        self.prec = prec

    def key(self) -> tuple:
        return (
            self.kind,
            str(self.dev),
            self.B,
            self.D,
            self.H,
            self.dtype,
            self.gdtype,
            self.ps,
            self.C,
            self.lp,
            self.prec,
            *self._key_extra(),
        )

    def _key_extra(self) -> tuple:
        return ()

    def phase(self):
        """The step launches' phase (graphs.py times a replay with it)."""
        return phase(f"{self.kind}_steps")

    def chunks(self) -> list[tuple[int, int]]:
        return [(t0, min(self.C, self.T - t0)) for t0 in range(0, self.T, self.C)]

    def grid(self) -> tuple[int, int, int]:
        return (self.lp.n_ht, self.lp.n_bt, self.lp.split)

    def consts(self) -> dict:
        c = self.lp.cfg
        return dict(
            F32=self.f32,
            PREC=self.prec,
            SPLIT=self.lp.split,
            MIN_KB=launch.MIN_KB,
            BLOCK_B=c.block_b,
            BLOCK_H=c.block_h,
            BLOCK_K=self.lp.block_k,
            num_warps=c.num_warps,
        )

    def gate_strides(self) -> tuple[int, int]:
        """(per step, per sequence) element strides of the chunk's gate and mask."""
        return (self.B * self.H, self.H) if self.ps else (self.H, 0)

    def stepper(self, kernel, s, **flags):
        """``step(j)``: launches ``kernel`` for slot j of the chunk, with the buffers of ``s``
        named by ``buffers``, then the sizes both kernels take and the constants."""
        grid, bufs = self.grid(), [s[name] for name in self.buffers.split()]
        dims = (self.B, self.H, self.HP, *self.gate_strides(), self.lp.n_sm)
        consts = {**flags, **self.consts()}

        def step(j: int) -> None:
            kernel[grid](*bufs, j, *dims, **consts)

        return step

    def _common(self, e) -> dict:
        B, H, HP, C, f32 = self.B, self.H, self.HP, self.C, torch.float32
        gshape = (C, B, H) if self.ps else (C, H)
        ws = (self.lp.split, 3 * B * HP) if self.lp.split > 1 else (1,)
        wh = e((3, HP, HP), self.dtype)
        if HP != H:
            wh[:, H:].zero_()
            wh[:, :, H:].zero_()
        return dict(
            wh=wh.view(3 * HP, HP),
            bias=e((4, H), f32),
            g=e(gshape, self.dtype),
            act=e(gshape, torch.uint8),
            lrel=e((B,), torch.int32),
            nval=e((1,), torch.int32),
            order=_zero_pads(e((C + 1, HP), torch.int32), H, HP),
            cnt=e((C + 1,), torch.int32),
            ws=e(ws, f32),
            sem=e((self.lp.n_bt * self.lp.n_ht,), torch.int32).zero_(),
        )

    def _begin_common(self, s) -> None:
        H, HP = self.H, self.HP
        s["wh"].view(3, HP, HP)[:, :H, :H].copy_(self.w_hh.view(3, H, H))
        s["bias"].copy_(self.bias)

    def _load_schedule(self, s, t0, n, g, act, order, cnt, lens, nxt: bool) -> None:
        """The chunk's gate, mask, order and counts (with step t0+n's when ``nxt``), lengths."""
        src_g = _t(g[:, t0 : t0 + n]) if self.ps else g[t0 : t0 + n]
        src_a = _t(act[:, t0 : t0 + n]) if self.ps else act[t0 : t0 + n]
        s["g"][:n].copy_(src_g)
        s["act"][:n].copy_(src_a)
        m = n + 1 if nxt and t0 + n < self.T else n
        s["order"][:m, : self.H].copy_(order[t0 : t0 + m])
        s["cnt"][:m].copy_(cnt[t0 : t0 + m])
        if nxt and m == n:
            s["cnt"][n].fill_(0)  # no step after the last one
        torch.sub(lens, t0, out=s["lrel"])
        s["nval"].fill_(n)


class _Fwd(_Loop):
    kind = "fwd"
    buffers = "xp a hs wh bias g act lrel nval order cnt plane ws sem"
    written = ("a", "hs", "plane", "ws", "sem")
    compared = ("a", "hs", "plane")

    def __init__(self, x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, save, prec):
        H = h0.shape[-1]
        super().__init__(x, H, g, prec)
        self.x, self.h0, self.w_hh, self.g, self.act = x, h0, w_hh, g, act
        self.wi_p = _pad_rows(w_ih, H, self.HP)
        self.bias = _bias4(b_ih, b_hh, H)
        self.lens = lengths.to(device=x.device, dtype=torch.int32)
        self.order, self.cnt = _order(act, H, self.T)
        self.save_plane = bool(save) and not self.f32  # fp32: the output is the state
        B, T = self.B, self.T
        self.out = _empty((B, T, H), x.dtype, x.device)
        self.plane = _empty((B, T, H) if self.save_plane else (0,), torch.float32, x.device)

    def _key_extra(self):
        return (self.save_plane,)

    def alloc(self, e=_empty) -> dict:
        B, D, H, HP, C, dt, f32 = self.B, self.D, self.H, self.HP, self.C, self.dtype, torch.float32
        dev = self.dev
        s = self._common(lambda shape, dtype: e(shape, dtype, dev))
        s.update(
            xc=e((C, B, D), dt, dev),
            xp=e((C, B, 3 * HP), f32, dev),
            a=_zero_pads(e((C + 1, B, HP), dt, dev), H, HP),
            hs=e((B, HP), f32, dev),
            plane=e((C, B, HP) if self.save_plane else (1,), f32, dev),
        )
        return s

    def begin(self, s) -> None:
        self._begin_common(s)
        H = self.H
        s["hs"][:, :H].copy_(self.h0)
        s["a"][0, :, :H].copy_(self.h0)

    def load(self, s, t0, n, first) -> None:
        B, D, HP, C = self.B, self.D, self.HP, self.C
        if not first:
            s["a"][0].copy_(s["a"][C])  # h_{t0-1}: the previous (full) chunk's last output
        s["xc"][:n].copy_(_t(self.x[:, t0 : t0 + n]))
        with phase("fwd_gemm"):
            _mm32(s["xc"][:n].view(n * B, D), self.wi_p.t(), out=s["xp"][:n].view(n * B, 3 * HP))
        self._load_schedule(s, t0, n, self.g, self.act, self.order, self.cnt, self.lens, False)

    def launches(self, k, s, n) -> None:
        step = self.stepper(k.fwd_step, s, SAVE=self.save_plane)
        for j in range(n):
            step(j)

    def store(self, s, t0, n) -> None:
        H = self.H
        _t(self.out[:, t0 : t0 + n]).copy_(s["a"][1 : n + 1, :, :H])
        if self.save_plane:
            _t(self.plane[:, t0 : t0 + n]).copy_(s["plane"][:n, :, :H])

    def end(self, s, k):
        return self.out, s["hs"][:, : self.H].to(self.dtype, copy=True), self.plane


class _Bwd(_Loop):
    kind = "bwd"
    buffers = "dgp dgo wh order inv cnt xp gh hp bias g act lrel nval go dc dg dh0 ws sem"
    written = ("dgp", "dgo", "dc", "dg", "ws", "sem")
    compared = ("dgp", "dgo", "dc", "dg")

    def __init__(
        self, grad_out, grad_h, x, h0, w_ih, w_hh, b_ih, b_hh, g, act, lengths, out, plane, prec
    ):
        H = w_hh.shape[-1]
        super().__init__(x, H, g, prec)
        self.go, self.gh_in, self.x, self.h0 = grad_out, grad_h, x, h0
        self.w_ih, self.w_hh, self.g, self.act, self.out, self.plane = (
            w_ih,
            w_hh,
            g,
            act,
            out,
            plane,
        )
        self.wi_p = _pad_rows(w_ih, H, self.HP)
        self.bias = _bias4(b_ih, b_hh, H)
        self.lens = lengths.to(device=x.device, dtype=torch.int32)
        self.order, self.cnt = _order(act, H, self.T)
        self.opened, self.ready = self._open_steps()
        self.idx = None  # the open steps of the chunk being run, when compacted
        self.inv = torch.empty_like(self.order).scatter_(  # each neuron's place in the order
            1,
            self.order.long(),
            torch.arange(H, dtype=torch.int32, device=x.device).expand(self.T, H),
        )
        B, T, D, HP, f32, dev = self.B, self.T, self.D, self.HP, torch.float32, x.device
        self.dx = _empty((B, T, D), x.dtype, dev)
        self.dg_full = _empty(g.shape, g.dtype if self.ps else f32, dev)
        z = torch.zeros
        self.dwi, self.dwh = (
            z(3 * HP, D, dtype=f32, device=dev),
            z(3 * HP, HP, dtype=f32, device=dev),
        )
        self.dbi, self.dbh = z(3 * HP, dtype=f32, device=dev), z(3 * HP, dtype=f32, device=dev)

    def alloc(self, e=_empty) -> dict:
        B, D, H, HP, C, dt, dev = self.B, self.D, self.H, self.HP, self.C, self.dtype, self.dev
        f32 = torch.float32
        s = self._common(lambda shape, dtype: e(shape, dtype, dev))
        dg = (C, B, HP) if self.ps else (C, self.lp.n_bt, HP)
        s.update(
            xc=e((C, B, D), dt, dev),
            ap=_zero_pads(e((C, B, HP), dt, dev), H, HP),
            xp=e((C, B, 3 * HP), f32, dev),
            gh=e((C, B, 3 * HP), f32, dev),
            go=e((C, B, HP), dt, dev),
            inv=e((C, HP), torch.int32, dev),
            dgp=_zero_pads(e((C, B, 4 * HP), dt, dev), H, HP),
            dgo=_zero_pads(e((C + 1, B, 3 * HP), dt, dev), H, HP),
            dc=e((B, HP), f32, dev),
            dg=e(dg, self.gdtype if self.ps else f32, dev),
            dh0=e((B, HP), f32, dev),
        )
        s["hp"] = s["ap"] if self.f32 else e((C, B, HP), f32, dev)  # fp32: the same values
        return s

    def chunks(self):
        return super().chunks()[::-1]

    def _open_steps(self):
        """Which steps compute a neuron (host bool [T]), copied without waiting (pinned memory
        and an event on CUDA), and the event. The gradient GEMMs of every chunk after the first
        one run may be compacted with it (launch.py, closed steps); the copy was queued before
        the first chunk's work, so waiting for it at the second never idles the GPU. Inside a
        CUDA-graph capture, and on meta tensors: (None, None), every chunk dense."""
        dev = self.dev
        if dev.type == "meta" or (dev.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            return None, None
        opened = self.cnt > 0
        if dev.type != "cuda":
            return opened.cpu(), None
        host = torch.empty(opened.shape, dtype=torch.bool, pin_memory=True)
        host.copy_(opened, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return host, ready

    def _compact(self, t0, n, first):
        """The chunk's open steps (int64 offsets on the device) where its gradient GEMMs run
        over them only (at least launch.COMPACT_MIN_CLOSED of its steps closed), else None."""
        if first or self.opened is None:
            return None
        if self.ready is not None:
            self.ready.synchronize()
        o = self.opened[t0 : t0 + n]
        if n - int(o.sum()) < launch.COMPACT_MIN_CLOSED * n:
            return None
        idx = o.nonzero().flatten()
        if self.dev.type == "cuda":
            return idx.pin_memory().to(self.dev, non_blocking=True)
        return idx.to(self.dev)

    def begin(self, s) -> None:
        self._begin_common(s)
        s["dc"][:, : self.H].copy_(self.gh_in)

    def load(self, s, t0, n, first) -> None:
        B, D, H, HP, C = self.B, self.D, self.H, self.HP, self.C
        self.idx = self._compact(t0, n, first)
        if not first:
            s["dgo"][C].copy_(s["dgo"][0])  # step t0+C's gradients, from the later chunk
        s["xc"][:n].copy_(_t(self.x[:, t0 : t0 + n]))
        self._prev(s["ap"][:, :, :H], self.out, self.h0, t0, n)
        if not self.f32:
            self._prev(s["hp"][:, :, :H], self.plane, self.h0, t0, n)
        rows = n * B
        with phase("bwd_gemm_recompute"):
            _mm32(s["xc"][:n].view(rows, D), self.wi_p.t(), out=s["xp"][:n].view(rows, 3 * HP))
            _mm32(s["ap"][:n].view(rows, HP), s["wh"].t(), out=s["gh"][:n].view(rows, 3 * HP))
        s["go"][:n, :, :H].copy_(_t(self.go[:, t0 : t0 + n]))
        self._load_schedule(s, t0, n, self.g, self.act, self.order, self.cnt, self.lens, True)
        s["inv"][:n, :H].copy_(self.inv[t0 : t0 + n])

    @staticmethod
    def _prev(dst, full, h0, t0, n) -> None:
        """dst[:n] <- h_{t-1} for t in [t0, t0+n), time-major, from ``full`` [B, T, H]."""
        if t0 == 0:
            dst[0].copy_(h0)
            if n > 1:
                dst[1:n].copy_(_t(full[:, : n - 1]))
        else:
            dst[:n].copy_(_t(full[:, t0 - 1 : t0 + n - 1]))

    def launches(self, k, s, n) -> None:
        step = self.stepper(k.bwd_step, s, PER_SAMPLE=self.ps)
        for j in range(n - 1, -1, -1):
            step(j)

    def store(self, s, t0, n) -> None:
        B, D, H, HP, idx = self.B, self.D, self.H, self.HP, self.idx
        dxv = _t(self.dx[:, t0 : t0 + n])
        with phase("bwd_gemm_grads"):
            if idx is None:  # every step's rows
                k, G, xc, ap = n, s["dgp"][:n], s["xc"][:n], s["ap"][:n]
            else:  # the open steps' rows only: the closed ones are zeros
                k = idx.numel()
                G, xc, ap = (s[m][:n].index_select(0, idx) for m in ("dgp", "xc", "ap"))
                dxv.zero_()
            if k:
                G, xc, ap = G.view(k * B, 4 * HP), xc.view(k * B, D), ap.view(k * B, HP)
                self.dwi += _mm32(G[:, : 3 * HP].t(), xc)
                self.dwh[: 2 * HP] += _mm32(G[:, : 2 * HP].t(), ap)
                self.dwh[2 * HP :] += _mm32(G[:, 3 * HP :].t(), ap)
                dx = torch.mm(G[:, : 3 * HP], self.wi_p).view(k, B, D)
                if idx is None:
                    dxv.copy_(dx)
                else:
                    dxv.index_copy_(0, idx, dx)
                self.dbi += G[:, : 3 * HP].sum(0, dtype=torch.float32)
                self.dbh[: 2 * HP] += G[:, : 2 * HP].sum(0, dtype=torch.float32)
                self.dbh[2 * HP :] += G[:, 3 * HP :].sum(0, dtype=torch.float32)
        if self.ps:
            _t(self.dg_full[:, t0 : t0 + n]).copy_(s["dg"][:n, :, :H])
        else:
            torch.sum(s["dg"][:n, :, :H], 1, out=self.dg_full[t0 : t0 + n])

    def end(self, s, k):
        H, HP = self.H, self.HP
        if self.T:  # dL/dh_0 through step 0's gates: one more launch
            with self.phase():
                self.stepper(k.bwd_step, s, PER_SAMPLE=self.ps)(-1)
            dh0 = s["dh0"][:, :H].to(self.dtype, copy=True)
        else:
            dh0 = s["dc"][:, :H].to(self.dtype, copy=True)

        dwi = self.dwi.view(3, HP, self.D)[:, :H].reshape(3 * H, self.D)
        dwh = self.dwh.view(3, HP, HP)[:, :H, :H].reshape(3 * H, H)
        dbi = self.dbi.view(3, HP)[:, :H].reshape(3 * H)
        dbh = self.dbh.view(3, HP)[:, :H].reshape(3 * H)
        wd, hd = self.w_ih.dtype, self.w_hh.dtype
        return (
            self.dx,
            dh0,
            dwi.to(wd),
            dwh.to(hd),
            dbi.to(wd),
            dbh.to(hd),
            self.dg_full.to(self.gdtype),
        )


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
    loop = _Fwd(c(x), c(h0), c(w_ih), c(w_hh), b_ih, b_hh, c(g), c(act), lengths, save, precision)
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
    loop = _Bwd(
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
    fwd = _Fwd(x, h0, w_ih, w_hh, b, b, g, act, lens, train, prec)
    full = [fwd.out, fwd.plane, act]
    out = dict(fwd_chunk=nbytes(fwd.alloc(meta).values()), bwd_chunk=0)
    if train:
        bwd = _Bwd(fwd.out, h0, x, h0, w_ih, w_hh, b, b, g, act, lens, fwd.out, fwd.plane, prec)
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
