"""The cpu fast path against the reference oracle; FLOP counts (the layer against nn.GRU:
test_layer.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import surnn.ops.schedule as schedule
from surnn.ops import su_gru
from surnn.ops.cpu import su_gru_cpu
from tests.fixtures import assert_close, make_case, op_gradcheck, run


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


@pytest.mark.parametrize("kind", ["random", "slab", "open"])
def test_cpu_flops_count_only_executed_updates(kind):
    B, T, D, H = 3, 8, 5, 70
    x, h0, w, g, _, lens = make_case(B, T, D, H, kind, lengths=True, dtype=torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        su_gru(x, h0, *w, g, None, lens, impl="cpu")
    valid = torch.arange(T)[None, :] < lens[:, None]
    executed = int(((g != 0)[None] & valid[:, :, None]).sum())
    assert fc.get_total_flops() == 2 * 3 * (D + H) * executed
