"""The cpu fast path against the reference oracle; the layer against nn.GRU; FLOP counts."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import surnn.ops.schedule as schedule
from surnn.ops import su_gru
from surnn.ops.cpu import su_gru_cpu
from tests.fixtures import F64, assert_close, make_case, op_gradcheck, run


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
    assert op_gradcheck(su_gru_cpu)


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
