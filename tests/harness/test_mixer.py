"""surnn/harness/mixer.py: the suRNN mixer behind the Mixer interface."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from surnn.gates import all_open
from surnn.harness.mixer import SuRNNMixer


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_mixer_padding_invariance_and_aux(impl):
    torch.manual_seed(0)
    gate = {"kind": "rhythm", "init_rate": 0.3, "target_rate": 0.1, "rate_penalty": 2.0}
    gate["rate_control"] = "none"  # the penalty alone: steering would move the gate between calls
    m = SuRNNMixer(16, gate=gate, impl=impl)
    x = torch.randn(3, 30, 16)
    lens = torch.tensor([30, 12, 20])
    y, aux = m(x, lens)
    x2 = torch.cat([x, torch.randn(3, 10, 16)], 1)  # more right padding, different values
    y2, _ = m(x2, lens)
    for b, n in enumerate(lens.tolist()):
        assert torch.allclose(y[b, :n], y2[b, :n], atol=1e-6)
    rate = m.rnn.last_gate[0][:30]
    valid = (torch.arange(30)[:, None] < lens[None]).float()  # [T, B]
    expected = float((rate.sum(1) * valid.sum(1)).sum() / (lens.sum() * 16))
    assert abs(aux["update_rate"] - expected) < 1e-6
    assert aux["aux_loss"].item() == pytest.approx(2.0 * (expected - 0.1) ** 2, rel=1e-4)
    aux["aux_loss"].backward()
    assert m.rnn.gates[0].bias.grad.abs().sum() > 0


def test_mixer_hidden_projection_and_flops_under_all_open():
    m = SuRNNMixer(8, hidden_size=12, gate={"kind": "interval", "period": 4}, impl="cpu").eval()
    x, lens = torch.randn(2, 16, 8), torch.tensor([16, 16])
    counts = []
    for ctx in (torch.no_grad(), all_open()):
        with torch.no_grad(), ctx, FlopCounterMode(display=False) as fc:
            y, aux = m(x, lens)
        counts.append(fc.get_total_flops())
    assert y.shape == (2, 16, 8)
    proj = 2 * 2 * 16 * 12 * 8  # the output projection H -> d_model
    per_update = 2 * 3 * (8 + 12)
    assert counts[0] == per_update * 2 * 16 * 12 // 4 + proj
    assert counts[1] == per_update * 2 * 16 * 12 + proj


def test_the_task_length_sets_a_rhythm_bank_and_nothing_else():
    def slowest(m):
        return float(2 * math.pi / m.rnn.gates[0].log_omega.exp().min())

    assert slowest(SuRNNMixer(8, max_len=100)) == pytest.approx(400.0)  # 4 x the length
    assert slowest(SuRNNMixer(8, gate={"seq_len": 10}, max_len=100)) == pytest.approx(40.0)
    assert slowest(SuRNNMixer(8, gate={"period_max": 64.0}, max_len=100)) == pytest.approx(64.0)
    SuRNNMixer(8, gate={"kind": "interval"}, max_len=100)  # a gate without a bank: no seq_len
