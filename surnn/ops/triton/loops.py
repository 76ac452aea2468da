"""The chunk loops of the Triton selective-update GRU: what one call of the op (op.py) runs,
on chunk-sized, time-major buffers, around the step kernels (kernels.py; launch.py: the
launch model). A call runs in chunks of C steps (launch.chunk_len):

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
second use, and serve every T. Every buffer comes from ``empty``: tests set ``FILL`` so that
fresh buffers hold NaN (and integers -1), which a kernel reading an unwritten position turns
into a wrong result.
"""

from __future__ import annotations

import contextlib

import torch

from surnn.ops.triton import launch

FILL: float | None = None  # tests: NaN, so that fresh buffers never read as zeros
N_SM: int | None = None  # tests: a small machine, so that the interpreter runs split-K
TIMER = None  # scripts/gpu_check.py: times the phases (``span(name)``, a context manager)


def phase(name: str):
    """A phase of a call, timed when TIMER is set: fwd_gemm, fwd_steps, bwd_gemm_recompute,
    bwd_steps, bwd_gemm_grads (the rest of a call is copies and bookkeeping)."""
    return TIMER.span(name) if TIMER is not None else contextlib.nullcontext()


def empty(shape, dtype, device) -> torch.Tensor:
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


def step_order(act: torch.Tensor, H: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
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


class Loop:
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


class Fwd(Loop):
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
        self.order, self.cnt = step_order(act, H, self.T)
        self.save_plane = bool(save) and not self.f32  # fp32: the output is the state
        B, T = self.B, self.T
        self.out = empty((B, T, H), x.dtype, x.device)
        self.plane = empty((B, T, H) if self.save_plane else (0,), torch.float32, x.device)

    def _key_extra(self):
        return (self.save_plane,)

    def alloc(self, e=empty) -> dict:
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


class Bwd(Loop):
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
        self.order, self.cnt = step_order(act, H, self.T)
        self.opened, self.ready = self._open_steps()
        self.idx = None  # the open steps of the chunk being run, when compacted
        self.inv = torch.empty_like(self.order).scatter_(  # each neuron's place in the order
            1,
            self.order.long(),
            torch.arange(H, dtype=torch.int32, device=x.device).expand(self.T, H),
        )
        B, T, D, HP, f32, dev = self.B, self.T, self.D, self.HP, torch.float32, x.device
        self.dx = empty((B, T, D), x.dtype, dev)
        self.dg_full = empty(g.shape, g.dtype if self.ps else f32, dev)
        z = torch.zeros
        self.dwi, self.dwh = (
            z(3 * HP, D, dtype=f32, device=dev),
            z(3 * HP, HP, dtype=f32, device=dev),
        )
        self.dbi, self.dbh = z(3 * HP, dtype=f32, device=dev), z(3 * HP, dtype=f32, device=dev)

    def alloc(self, e=empty) -> dict:
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
