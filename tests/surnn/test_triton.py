"""The Triton path against the reference: under TRITON_INTERPRET=1 on the CPU (fp32), and on
CUDA (fp32 and bf16) when a GPU is present. Every buffer the op allocates is NaN-filled
(integers -1; loops.FILL), so a kernel that reads a position nothing wrote gives NaN instead of
the zeros fresh CPU memory often holds. ``small_machine`` shrinks the launch model (chunks of
2 steps, 16x16x16 tiles, 6 SMs) so that chunk boundaries, partial chunks and split-K run at
interpreter sizes. Also: the contract of ``active``, the numerics emulation (bf16 at
T=4096 against float64), the memory formula, torch.library.opcheck and FLOPs."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures import (
    assert_close,
    make_case,
    run,
    small_triton_machine,
    triton_interpreter_unless_cuda,
)

HAS_CUDA = torch.cuda.is_available()
triton_interpreter_unless_cuda()  # before the kernels are imported

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from surnn.ops import su_gru  # noqa: E402
from surnn.ops.reference import su_gru_reference  # noqa: E402
from surnn.ops.triton import launch, loops, numerics, op  # noqa: E402
from surnn.ops.triton.kernels import _splits  # noqa: E402

DEV = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    monkeypatch.setattr(loops, "FILL", float("nan"))


@pytest.fixture
def small_machine(monkeypatch):
    small_triton_machine(monkeypatch.setattr)


def to_dev(case, dtype=torch.float32):
    x, h0, w, g, active, lens = case

    def conv(t):
        return t.detach().to(DEV, dtype).requires_grad_()

    lens = lens.to(DEV) if lens is not None else None
    return conv(x), conv(h0), [conv(t) for t in w], conv(g), active.to(DEV), lens


CASES = [
    ("random", False, True, 5, 6, 20, 37),
    ("random", True, False, 3, 4, 7, 33),  # per-sample gate
    ("closed", False, True, 4, 4, 8, 40),
    ("slab", False, True, 17, 4, 9, 70),  # B > one batch tile, H not a multiple of the block
    ("random", False, True, 3, 1, 6, 10),  # T = 1
]


@pytest.mark.parametrize("kind,per_sample,lengths,B,T,D,H", CASES)
def test_triton_matches_reference(kind, per_sample, lengths, B, T, D, H):
    case = to_dev(make_case(B, T, D, H, kind, per_sample, lengths, dtype=torch.float32))
    assert_close(run("triton", case), run("reference", case), 2e-4)


SMALL_CASES = [
    ("random", False, True, 5, 7, 20, 70),  # 4 chunks, the last one partial; split-K
    ("sparse", True, True, 17, 4, 9, 35),  # two batch tiles, per-sample gate
]


@pytest.mark.parametrize("kind,per_sample,lengths,B,T,D,H", SMALL_CASES)
def test_chunks_and_split_k_match_reference(small_machine, kind, per_sample, lengths, B, T, D, H):
    case = to_dev(make_case(B, T, D, H, kind, per_sample, lengths, dtype=torch.float32))
    assert_close(run("triton", case), run("reference", case), 2e-4)


def _loops(case):
    """The forward and backward loops of a training call, for looking at their buffers."""
    x, h0, w, g, active, lens = case
    act = op.mask_u8(g, active)
    lens = lens if lens is not None else torch.full((x.shape[0],), x.shape[1])
    k = op._kernels()
    fwd = loops.Fwd(
        x.detach(), h0.detach(), *[t.detach() for t in w], g.detach(), act, lens, True, "ieee"
    )
    fs, (out, hT, plane) = _drive(fwd, k)
    go = torch.randn_like(out)
    bwd = loops.Bwd(
        go,
        hT,
        x.detach(),
        h0.detach(),
        *[t.detach() for t in w],
        g.detach(),
        act,
        lens,
        out,
        plane,
        "ieee",
    )
    bs, grads = _drive(bwd, k)
    return fwd, fs, bwd, bs, grads


def _drive(loop, k):
    """One direction's loop, chunk by chunk, without CUDA graphs: (its buffers, its end)."""
    s = loop.alloc()
    loop.begin(s)
    for i, (t0, n) in enumerate(loop.chunks()):
        loop.load(s, t0, n, i == 0)
        loop.launches(k, s, n)
        loop.store(s, t0, n)
    return s, loop.end(s, k)


def test_closed_steps_leave_the_gradient_gemms(small_machine, monkeypatch):
    """Chunks of 2 steps, run from the last: the first one run is dense; of the others, a
    chunk with every step closed runs no gradient GEMM, and one with half of them closed runs
    them over its open step only (dx zero at the closed ones, NaN-filled otherwise)."""
    x, h0, w, g, active, lens = make_case(3, 6, 5, 20, "random", lengths=True)
    g, active = g.detach().clone(), active.clone()
    g[1:4], active[1:4] = 0, False  # steps 1, 2, 3 closed
    lens[0] = 6
    case = to_dev((x, h0, w, g.requires_grad_(), active, lens))
    seen, real = [], loops.Bwd._compact

    def spy(self, t0, n, first):
        idx = real(self, t0, n, first)
        seen.append((t0, None if idx is None else idx.tolist()))
        return idx

    monkeypatch.setattr(loops.Bwd, "_compact", spy)
    assert_close(run("triton", case), run("reference", case), 2e-4)
    assert seen == [(4, None), (2, []), (0, [0])]


def test_split_k_really_runs(small_machine, monkeypatch):
    """With 16 SMs, 4 neuron tiles and 4 K blocks, a step spreads each tile's reduction over
    2 programs: the split-K workspace is written (it stays NaN when no step splits)."""
    monkeypatch.setattr(loops, "N_SM", 16)
    case = to_dev(make_case(3, 4, 5, 64, "open", dtype=torch.float32))
    fwd, fs, bwd, bs, grads = _loops(case)
    assert fwd.lp.split == 2 and bwd.lp.split == 2
    assert torch.isfinite(fs["ws"]).any() and torch.isfinite(bs["ws"]).any()
    assert all(torch.isfinite(t).all() for t in grads)
    assert (fs["sem"] == 0).all() and (bs["sem"] == 0).all()  # counters reset for the next step


def test_poison_catches_an_unwritten_read(small_machine, monkeypatch):
    """The check can fail: without copying step t0+C's gradients into the chunk's last slot,
    the backward reads a slot nothing wrote, and the NaN fill shows it."""
    real = loops.Bwd.load

    def load_without_the_carry(self, s, t0, n, first):
        s_c = s["dgo"][self.C].clone()
        real(self, s, t0, n, first)
        s["dgo"][self.C].copy_(s_c)  # undo the copy: the slot keeps what it held before

    monkeypatch.setattr(loops.Bwd, "load", load_without_the_carry)
    case = to_dev(make_case(3, 5, 5, 20, "open", dtype=torch.float32))
    grads = run("triton", case)[2:]
    assert not all(torch.isfinite(t).all() for t in grads)


@triton.jit
def _probe_splits(out_ptr, n_sm, SPLIT: tl.constexpr, MIN_KB: tl.constexpr):
    work = tl.program_id(0) + 1
    nkb = tl.program_id(1)
    tl.store(out_ptr + tl.program_id(0) * 20 + nkb, _splits(work, nkb, n_sm, SPLIT, MIN_KB))


def test_split_formula_on_the_device_is_the_model():
    """kernels._splits (evaluated in the kernels) and launch.splits agree."""
    for n_sm, split in ((132, 8), (6, 2)):
        out = torch.zeros(40, 20, dtype=torch.int32, device=DEV)
        _probe_splits[(40, 20)](out, n_sm, SPLIT=split, MIN_KB=launch.MIN_KB)
        want = [[launch.splits(w + 1, k, n_sm, split) for k in range(20)] for w in range(40)]
        assert out.cpu().tolist() == want


def test_active_that_misses_open_neurons_has_the_reference_semantics():
    """The contract of ``active``: wherever the gate is open the update is computed (forward
    and backward), but the gate gets a gradient only where ``active``."""
    gen = torch.Generator().manual_seed(5)
    x, h0, w, g, _, lens = make_case(4, 6, 5, 24, "random", lengths=True, dtype=torch.float32)
    active = torch.rand(6, 24, generator=gen) < 0.3  # misses open neurons, adds closed ones
    assert ((g != 0) & ~active).any() and (active & (g == 0)).any()
    case = to_dev((x, h0, w, g, active, lens))
    got, ref = run("triton", case), run("reference", case)
    assert_close(got, ref, 2e-4)
    dg = got[-1]
    assert (dg[(~active).to(dg.device)] == 0).all()


def test_steps_past_the_longest_sequence_are_not_run(monkeypatch):
    """Lengths on the CPU: the steps after the longest sequence are closed for every sequence,
    so the op runs only up to it (no launches, no GEMM rows for the rest) and autograd routes
    the padding outputs' gradients into dL/dh_T: the same values and gradients."""
    runs = []
    real = loops.Fwd.__init__

    def spy(self, x, *a, **kw):
        runs.append(x.shape[1])
        real(self, x, *a, **kw)

    monkeypatch.setattr(loops.Fwd, "__init__", spy)
    for per_sample in (False, True):
        x, h0, w, g, active, _ = make_case(3, 7, 5, 20, "random", per_sample, dtype=torch.float32)
        lens = torch.tensor([4, 2, 4])
        case = to_dev((x, h0, w, g, active, lens))
        case = (*case[:5], lens)  # the lengths stay on the CPU
        assert_close(run("triton", case), run("reference", case), 2e-4)
    assert runs == [4, 4]


def test_precision_choice():
    assert op.precision_for(torch.float32, "tf32") == "tf32"
    with pytest.raises(ValueError, match="precision='fast'"):
        op.precision_for(torch.float32, "fast")
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert op.precision_for(torch.float32, None) == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = False
        assert op.precision_for(torch.float32, None) == "ieee"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    case = to_dev(make_case(3, 4, 5, 20, "random", dtype=torch.float32))
    x, h0, w, g, active, lens = case
    out, h = op.su_gru_triton(x, h0, *w, g, active, lens, precision="tf32")
    ref, _ = su_gru_reference(x, h0, *w, g, active, lens)
    tol = 2e-4 if not HAS_CUDA else 2e-2  # the interpreter computes TF32 dots in fp32
    assert (out - ref).abs().max() < tol


def test_numerics_emulation_is_the_kernels():
    """numerics.emulate in fp32 reproduces the kernels (values and gradients)."""
    x, h0, w, g, active, lens = make_case(3, 7, 5, 20, "random", True, True, dtype=torch.float32)
    wout = torch.randn(3, 7, 20, generator=torch.Generator().manual_seed(2))
    case = to_dev((x, h0, w, g, active, lens))
    cx, ch0, cw, cg, cact, clens = case
    out, h = op.su_gru_triton(cx, ch0, *cw, cg, cact, clens)
    loss = (out * wout.to(DEV)).sum() + (h * h).sum()
    got = [out, h, *torch.autograd.grad(loss, [cx, ch0, *cw, cg])]
    d = [t.detach() for t in (x, h0, *w, g)]
    e_out, e_h, grads = numerics.emulate(
        d[0], d[1], *d[2:6], d[6], active, lens, grad_out=wout, grad_h=2 * h.detach().cpu()
    )
    assert numerics.max_error([t.cpu() for t in got], [e_out, e_h, *grads]) < 1e-5


def _f64_reference(args, active, lens, wout, gh):
    """float64 values and gradients; the compiled CPU kernel (tested against the reference)
    runs the 4,096 steps in C++ ('cpu', its fallback, in PyTorch)."""
    a = [t.double().requires_grad_() for t in args]
    out, h = su_gru(a[0], a[1], *a[2:6], a[6], active, lens, impl="compiled")
    loss = (out * wout.double()).sum() + (h * gh.double()).sum()
    return [out, h, *torch.autograd.grad(loss, a)]


@pytest.fixture
def one_thread():
    """4,096 steps of tiny ops: one thread (two threads of OpenMP on a busy 2-core machine
    take 15x longer)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bf16_numerics_hold_over_4096_steps(one_thread):
    """A bf16 run of the op's numerics (numerics.emulate: fp32 state, bf16 dot operands and
    stored gradients) stays within numerics.LONG_TOL of float64 over 4,096 steps, values and
    gradients; scripts/gpu_check.sh holds the real bf16 kernels to the same tolerance."""
    B, T, D, H = 2, 4096, 8, 32
    x, h0, w, g, active, lens = make_case(B, T, D, H, "sparse", lengths=True, dtype=torch.float32)
    w[1] = w[1] * (1.5 / (0.4 * H**0.5))  # a contracting recurrence (spectral radius about
    # 0.75 x the gates), as trained layers have; a chaotic one separates any two precisions
    bf = [t.detach().bfloat16() for t in (x, h0, *w, g)]
    wout = torch.randn(B, T, H, generator=torch.Generator().manual_seed(2)) / T**0.5
    gh = torch.randn(B, H, generator=torch.Generator().manual_seed(3))
    ref = _f64_reference([t.float() for t in bf], active, lens, wout, gh)
    out, h, grads = numerics.emulate(
        bf[0], bf[1], *bf[2:6], bf[6], active, lens, grad_out=wout.bfloat16(), grad_h=gh.bfloat16()
    )
    assert numerics.max_error([out, h], ref[:2]) < numerics.LONG_TOL["out"]
    assert numerics.max_error(grads, ref[2:]) < numerics.LONG_TOL["grads"]


def test_training_memory_of_path_x_under_40_gb():
    """launch.memory_bytes (the README's formula) is what the op allocates, and Path-X
    training (B=256, T=16384, D=H=512, bf16) needs under 40 GB of it."""
    for B, T, D, H, ps in ((3, 9, 5, 40, False), (20, 33, 7, 64, True)):
        want = op.call_bytes(B, T, D, H, torch.bfloat16, per_sample=ps)
        got = launch.memory_bytes(B, T, D, H, 2, per_sample_gate=ps)
        assert got["full"] == want["full"] and got["fwd_chunk"] == want["fwd_chunk"]
        assert got["bwd_chunk"] == want["bwd_chunk"]
    px = launch.memory_bytes(256, 16384, 512, 512, 2)
    assert px["total"] < 40e9, px


@pytest.mark.skipif(not HAS_CUDA, reason="bf16 kernels need CUDA")
def test_triton_bf16_close_to_fp32_reference():
    case32 = to_dev(make_case(8, 32, 64, 96, "random", lengths=True, dtype=torch.float32))
    ref = run("reference", case32)
    case16 = tuple(
        [t.detach().bfloat16().requires_grad_() for t in c]
        if isinstance(c, list)
        else (
            c.detach().bfloat16().requires_grad_() if c is not None and c.is_floating_point() else c
        )
        for c in case32
    )
    got = run("triton", case16)
    for a, b in zip(got[:2], ref[:2]):
        assert (a.float() - b).abs().max() < 5e-2


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU with > 8 GB free")
def test_triton_offsets_past_2_31_elements():
    """B*T*H = 260*16384*512 > 2**31: the [B, T, H] output passes the int32 range (the kernels
    address only chunk buffers; torch copies the chunks in and out). Each sequence must come
    out as when it runs alone."""
    B, T, D, H = 260, 16384, 8, 512
    gen = torch.Generator(device=DEV).manual_seed(0)
    bf = torch.bfloat16

    def rnd(*s):
        return (torch.randn(*s, generator=gen, device=DEV) * 0.3).to(bf)

    x, h0 = rnd(B, T, D), rnd(B, H)
    w = [rnd(3 * H, D), rnd(3 * H, H), rnd(3 * H), rnd(3 * H)]
    off = torch.arange(H, device=DEV) * 4 // H
    g = ((torch.arange(T, device=DEV)[:, None] + off[None]) % 4 == 0).to(bf)
    with torch.no_grad():
        out, h = su_gru(x, h0, *w, g, g != 0, impl="triton")
        tail = slice(B - 4, B)
        out_t, h_t = su_gru(x[tail], h0[tail], *w, g, g != 0, impl="triton")
        assert (out[tail, -1].float() - out_t[:, -1].float()).abs().max() < 2e-2
        assert (h[tail].float() - h_t.float()).abs().max() < 2e-2
        assert (out[tail].float() - out_t.float()).abs().max() < 5e-2


def test_triton_flop_formula_counts_executed_updates():
    B, T, D, H = 3, 5, 6, 40
    x, h0, w, g, active, lens = to_dev(make_case(B, T, D, H, "random", lengths=True))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        su_gru(x, h0, *w, g, active, lens, impl="triton")
    valid = torch.arange(T, device=DEV)[None, :] < lens[:, None]
    executed = int(((active | (g != 0))[None] & valid[:, :, None]).sum())
    assert fc.get_total_flops() == 2 * 3 * (D + H) * executed


def test_opcheck():
    B, T, D, H = 2, 2, 3, 8
    x, h0, w, g, active, lens = to_dev(make_case(B, T, D, H, "random", lengths=True))
    args = (x, h0, *w, g, op.mask_u8(g, active), lens, True)
    torch.library.opcheck(
        torch.ops.surnn.su_gru_fwd.default,
        args,
        test_utils=(
            "test_schema",
            "test_autograd_registration",
            "test_faketensor",
            "test_aot_dispatch_dynamic",
        ),
    )


def test_step_order_packs_the_computed_neurons_first():
    """The kernels compute ceil(count/BLOCK_H) tiles per step: the order must put every
    computed neuron (of any sequence) first, be a permutation, and keep the layout order."""
    gen = torch.Generator().manual_seed(0)
    T, H = 6, 70
    active = torch.rand(T, H, generator=gen) < 0.2
    order, cnt = loops.step_order(active.to(torch.uint8), H, T)
    assert order.dtype == torch.int32 and cnt.tolist() == active.sum(1).tolist()
    for t in range(T):
        o = order[t].long()
        assert sorted(o.tolist()) == list(range(H))
        c = int(cnt[t])
        assert active[t, o[:c]].all() and not active[t, o[c:]].any()
        assert (torch.diff(o[:c]) > 0).all() and (torch.diff(o[c:]) > 0).all()
    per_sample = torch.zeros(2, T, H, dtype=torch.uint8)
    per_sample[0, :, 3] = per_sample[1, :, 60] = 3
    order, cnt = loops.step_order(per_sample, H, T)
    assert cnt.tolist() == [2] * T and order[0, :2].tolist() == [3, 60]
