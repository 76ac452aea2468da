"""The cpu fast path against the reference oracle; the layer against nn.GRU; FLOP counts."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import surnn.ops.schedule as schedule
from surnn.ops import su_gru
from surnn.ops.cpu import su_gru_cpu

F64 = torch.float64


def make_case(B, T, D, H, kind, per_sample=False, lengths=False, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*s, scale=0.4):
        return (torch.randn(*s, generator=gen, dtype=dtype) * scale).requires_grad_()

    x, h0 = rnd(B, T, D, scale=1.0), rnd(B, H, scale=1.0)
    w = [rnd(3 * H, D), rnd(3 * H, H), rnd(3 * H), rnd(3 * H)]
    shape = (B, T, H) if per_sample else (T, H)
    u = torch.rand(shape, generator=gen, dtype=dtype)
    if kind == "open":
        u = torch.zeros(shape, dtype=dtype)
    elif kind == "closed":
        u = torch.ones(shape, dtype=dtype)
    elif kind == "slab":  # neuron i open when (t + i*P//H) % P == 0: one slab per step
        P = 3
        off = torch.arange(H) * P // H
        u = ((torch.arange(T)[:, None] + off[None]) % P != 0).to(dtype).expand(shape)
    g = (u < 0.35).to(dtype).requires_grad_()
    active = u < 0.6  # open plus "near threshold" neurons
    lens = torch.randint(1, T + 1, (B,), generator=gen) if lengths else None
    return x, h0, w, g, active, lens


def run(impl, case, grad_seed=1):
    x, h0, w, g, active, lens = case
    out, h = su_gru(x, h0, *w, g, active, lens, impl=impl)
    gen = torch.Generator().manual_seed(grad_seed)
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float32).to(out.device, out.dtype)
    loss = (out * weights).sum() + (h * h).sum()
    grads = torch.autograd.grad(loss, [x, h0, *w, g])
    return (out, h, *grads)


def assert_close(a_list, b_list, tol):
    names = ["out", "h", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dg"]
    for name, a, b in zip(names, a_list, b_list):
        assert a.shape == b.shape, name
        err = (a - b).abs().max().item() if a.numel() else 0.0
        assert err < tol, f"{name}: max abs diff {err:.3g}"


@pytest.mark.parametrize("kind", ["random", "open", "closed", "slab"])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
def test_cpu_matches_reference(kind, per_sample, lengths):
    case = make_case(4, 7, 5, 11, kind, per_sample, lengths)
    assert_close(run("cpu", case), run("reference", case), 1e-10)


@pytest.mark.parametrize(
    "max_blocks,max_groups", [(0, 0), (0, 1000), (1000, 0), (1000, 1000), (2, 1000)]
)
def test_cpu_fallbacks_match_reference(monkeypatch, max_blocks, max_groups):
    """Gathered rows (fragmented steps) and per-step weight gradients (many groups)."""
    monkeypatch.setattr(schedule, "MAX_BLOCKS", max_blocks)
    monkeypatch.setattr(schedule, "MAX_GROUPS", max_groups)
    case = make_case(3, 9, 4, 40, "random", lengths=True)
    assert_close(run("cpu", case), run("reference", case), 1e-10)


def test_cpu_t1_and_empty_batch_rows():
    case = make_case(3, 1, 4, 6, "random", lengths=True)
    assert_close(run("cpu", case), run("reference", case), 1e-10)


def test_cpu_gradcheck():
    gen = torch.Generator().manual_seed(3)
    B, T, D, H = 2, 4, 3, 5
    args = [torch.randn(s, generator=gen, dtype=F64) for s in [(B, T, D), (B, H)]]
    args += [torch.randn(s, generator=gen, dtype=F64) * 0.5 for s in [(3 * H, D), (3 * H, H)]]
    args += [torch.randn(3 * H, generator=gen, dtype=F64) * 0.5 for _ in range(2)]
    args.append(torch.rand(T, H, generator=gen, dtype=F64))  # soft gate values
    args = [a.requires_grad_() for a in args]
    active = torch.ones(T, H, dtype=torch.bool)
    lens = torch.tensor([4, 2])

    def fn(*a):
        return su_gru_cpu(*a, active=active, lengths=lens)

    assert torch.autograd.gradcheck(fn, args, atol=1e-7)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (F64, 1e-10)])
def test_forced_open_equals_nn_gru(impl, dtype, tol):
    from surnn.layer import SelectiveUpdateGRU

    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 9, num_layers=2).to(dtype)
    su = SelectiveUpdateGRU(6, 9, num_layers=2, gate={"kind": "open"}, impl=impl).to(dtype)
    su.load_state_dict(gru.state_dict(), strict=False)
    x = torch.randn(13, 4, 6, dtype=dtype)  # [T, B, D]: batch_first=False
    h0 = torch.randn(2, 4, 9, dtype=dtype)
    (o1, h1), (o2, h2) = gru(x, h0), su(x, h0)
    assert (o1 - o2).abs().max() < tol and (h1 - h2).abs().max() < tol
    lens = torch.tensor([13, 5, 9, 1])
    packed = pack_padded_sequence(x, lens, enforce_sorted=False)
    (p1, q1), (p2, q2) = gru(packed, h0), su(packed, h0)
    assert (p1.data - p2.data).abs().max() < tol and (q1 - q2).abs().max() < tol


@pytest.mark.parametrize("kind", ["random", "slab", "open"])
def test_cpu_flops_count_only_executed_updates(kind):
    B, T, D, H = 3, 8, 5, 70
    x, h0, w, g, _, lens = make_case(B, T, D, H, kind, lengths=True, dtype=torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        su_gru(x, h0, *w, g, None, lens, impl="cpu")
    valid = torch.arange(T)[None, :] < lens[:, None]
    executed = int(((g != 0)[None] & valid[:, :, None]).sum())
    assert fc.get_total_flops() == 2 * 3 * (D + H) * executed
