"""The cpu fast path against the reference oracle; FLOP counts (the layer against nn.GRU:
test_layer.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import surnn.ops as ops
import surnn.ops.schedule as schedule
from surnn.ops import compiled, su_gru, update_rates
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


@pytest.mark.parametrize("impl", ["reference", "cpu", "compiled", "auto"])
def test_no_h0_starts_from_zeros(impl, monkeypatch):
    """h0=None is h0 = zeros, with and without gradients (the compiled kernel's inference
    makes the zeros itself; auto hands a wide layer's dense training to the eager path)."""
    if impl in ("compiled", "auto") and not compiled.available():
        pytest.skip(f"compiled kernel unavailable: {compiled._STATE['error']}")
    monkeypatch.setattr(ops, "AUTO_DENSE_GRAD_MAX_H", 4)  # H=6 is wide
    kind = "open" if impl == "auto" else "random"
    x, h0, w, g, active, lens = make_case(3, 5, 4, 6, kind, lengths=True)
    zeros = torch.zeros_like(h0)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            got = su_gru(x, None, *w, g, active, lens, impl=impl)
            want = su_gru(x, zeros, *w, g, active, lens, impl=impl)
        assert all(torch.equal(a, b) for a, b in zip(got, want)), grad


def test_update_rates_weigh_the_valid_positions_and_serve_table_rates():
    """The layer's rates: means over the valid (sequence, step, neuron) positions; lengths
    that close nothing count as none; a served table view's rates are computed once, and
    its registry entry leaves with the view."""
    from surnn.gates import build_gate
    from surnn.ops import step_tables

    gen = torch.Generator().manual_seed(0)
    g, active = (torch.rand(2, 4, 3, generator=gen) < 0.5).float(), torch.ones(2, 4, 3) > 0
    lens = torch.tensor([4, 1])
    rate, act = update_rates(g, active, lens)
    valid = (torch.arange(4)[None] < lens[:, None])[..., None]
    assert torch.allclose(rate, (g * valid).sum() / (valid.sum() * 3)) and float(act) == 1.0
    g2 = g[0]  # time-only: step t counts once per running sequence
    rate2, _ = update_rates(g2, g2 > 0, lens)
    assert torch.allclose(rate2, (g2 * valid.sum(0)).sum() / (valid.sum() * 3))
    assert torch.equal(update_rates(g2, g2 > 0, torch.tensor([4, 9]))[0], g2.mean())
    gate = build_gate(8, 8, {"kind": "rhythm"})
    with torch.no_grad():
        served, served_active = gate(40, None, dtype=torch.float32)
        first = update_rates(served, served_active)
        assert update_rates(served, served_active) is first  # computed once
        assert torch.equal(first[0], served.mean())
        old = step_tables._SERVED[id(served)][0]  # a weak reference to the view
        gate.bias.add_(1.0)  # a new table: the old views go
        del served, served_active, first
        gate(40, None, dtype=torch.float32)
    assert old() is None and all(entry[0]() is not None for entry in step_tables._SERVED.values())
