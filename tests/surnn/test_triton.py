"""The Triton path against the reference: under TRITON_INTERPRET=1 on the CPU (fp32), and
on CUDA (fp32 and bf16) when a GPU is present. Also torch.library.opcheck and FLOPs."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures import assert_close, make_case, run, triton_interpreter_unless_cuda

HAS_CUDA = torch.cuda.is_available()
triton_interpreter_unless_cuda()  # before the kernels are imported

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from surnn.ops import su_gru  # noqa: E402

DEV = "cuda" if HAS_CUDA else "cpu"


def to_dev(case, dtype=torch.float32):
    x, h0, w, g, active, lens = case

    def conv(t):
        return t.detach().to(DEV, dtype).requires_grad_()

    lens = lens.to(DEV) if lens is not None else None
    return conv(x), conv(h0), [conv(t) for t in w], conv(g), active.to(DEV), lens


CASES = [
    ("random", False, True, 5, 6, 20, 37),
    ("random", True, False, 3, 5, 7, 33),  # per-sample gate
    ("open", False, False, 4, 5, 8, 40),
    ("closed", False, True, 4, 5, 8, 40),
    ("slab", False, True, 17, 6, 9, 70),  # B > one batch tile, H not a multiple of the block
    ("random", False, True, 3, 1, 6, 10),  # T = 1
]


@pytest.mark.parametrize("kind,per_sample,lengths,B,T,D,H", CASES)
def test_triton_matches_reference(kind, per_sample, lengths, B, T, D, H):
    case = to_dev(make_case(B, T, D, H, kind, per_sample, lengths, dtype=torch.float32))
    ref = run("reference", case)
    got = run("triton", case)
    assert_close(got, ref, 2e-4)


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
    """B*T*H = 260*16384*512 > 2**31: the last sequences live past the int32 range of the
    output. With 32-bit offsets they were written to wrapped (wrong) addresses; each
    sequence must come out as when it runs alone."""
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
    import surnn.ops.triton.op  # noqa: F401  (registers the ops)

    B, T, D, H = 2, 3, 4, 16
    x, h0, w, g, active, lens = to_dev(make_case(B, T, D, H, "random", lengths=True))
    lens = lens if lens is not None else torch.full((B,), T)
    args = (x, h0, *w, g, active, lens, True)
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


def test_step_order_packs_the_active_neurons_first():
    """The kernels compute ceil(count/32) tiles per step: the order must put every active
    neuron (of any sequence) first, be a permutation, and keep the layout order (stable)."""
    from surnn.ops.triton.op import _order

    gen = torch.Generator().manual_seed(0)
    T, H = 6, 70
    active = torch.rand(T, H, generator=gen) < 0.2
    order, cnt = _order(active, H, T)
    assert order.dtype == torch.int32 and cnt.tolist() == active.sum(1).tolist()
    for t in range(T):
        o = order[t].long()
        assert sorted(o.tolist()) == list(range(H))
        c = int(cnt[t])
        assert active[t, o[:c]].all() and not active[t, o[c:]].any()
        assert (torch.diff(o[:c]) > 0).all() and (torch.diff(o[c:]) > 0).all()
    per_sample = torch.zeros(2, T, H, dtype=torch.bool)
    per_sample[0, :, 3] = per_sample[1, :, 60] = True
    order, cnt = _order(per_sample, H, T)
    assert cnt.tolist() == [2] * T and order[0, :2].tolist() == [3, 60]
