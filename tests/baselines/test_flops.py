"""FLOP counts of the baselines under FlopCounterMode equal their analytic formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import baselines.flops as bf
from baselines.s4d import S4DMixer
from baselines.s4d import analytic_flops as s4d_flops
from baselines.transformer import AttentionMixer
from baselines.transformer import analytic_flops as attn_flops
from tests.fixtures import load_script


def count(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def test_fft_formulas():
    x = torch.randn(3, 5, 48)
    assert count(lambda: torch.fft.rfft(x, n=96)) == round(15 * 2.5 * 96 * math.log2(96))
    X = torch.fft.rfft(x)
    assert count(lambda: torch.fft.irfft(X, n=48)) == round(15 * 2.5 * 48 * math.log2(48))
    z = torch.randn(4, 64, dtype=torch.cfloat)
    assert count(lambda: torch.fft.fft(z)) == 4 * 5 * 64 * 6
    assert count(lambda: torch.fft.fft2(torch.randn(2, 8, 16, dtype=torch.cfloat))) == round(
        2 * 5 * 128 * 7
    )


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("output", ["glu", "linear"])
def test_s4d_flops_match_analytic(bidirectional, output):
    m = S4DMixer(12, d_state=8, bidirectional=bidirectional, output=output).eval()
    B, L = 3, 40
    x = torch.randn(B, L, 12)
    got = count(lambda: m(x, torch.tensor([40, 20, 5])))
    want = s4d_flops(B, L, 12, 8, bidirectional, glu=output == "glu")
    assert got == want["total"]
    # the FFT and Vandermonde terms are really in the count (not just the linear layer)
    assert want["fft"] > 0 and want["vandermonde"] > 0 and got > want["linear"]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_flops_match_analytic(padded, causal):
    m = AttentionMixer(16, n_heads=4, qkv_dim=8, causal=causal).eval()
    B, L = 2, 30
    lengths = torch.tensor([30, 11 if padded else 30])
    got = count(lambda: m(torch.randn(B, L, 16), lengths))
    assert got == attn_flops(B, L, 16, qkv_dim=8)
    assert got > 2 * B * L * 16 * 4 * 8  # attention itself is counted, not only projections


@pytest.mark.parametrize("cls,gates", [(torch.nn.LSTM, 4), (torch.nn.GRU, 3)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_rnn_flops(cls, gates, bidirectional):
    D, H = 6, 10
    rnn = cls(D, H, batch_first=True, bidirectional=bidirectional)
    dirs = 2 if bidirectional else 1
    x = torch.randn(3, 9, D)
    per_token = dirs * 2 * gates * H * (D + H)
    assert count(lambda: rnn(x)) == 27 * per_token
    lengths = torch.tensor([9, 4, 2])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    assert count(lambda: rnn(packed)) == 15 * per_token


def test_cudnn_rnn_formula_shapes():
    """The cuDNN formula (GPU only at run time) on the shapes cuDNN receives."""
    D, H = 6, 10
    ws = [(4 * H, D), (4 * H, H), (4 * H,), (4 * H,)] * 2  # LSTM, two directions
    args = ((9, 3, D), ws, 4, None, (2, 3, H), (2, 3, H), 2, H, 0, 1, True, 0.0, False, True, [])
    assert bf._cudnn_rnn_flop(*args) == 27 * 2 * 2 * 4 * H * (D + H)
    packed = ((15, D), ws, 4, None, (2, 3, H), (2, 3, H), 2, H, 0, 1, True, 0.0, False, True, [3])
    assert bf._cudnn_rnn_flop(*packed) == 15 * 2 * 2 * 4 * H * (D + H)


def _load_table_script():
    return load_script("model_table")


@pytest.mark.parametrize(
    "name,options,methods",
    [
        ("gru", {}, ("a", "a")),
        ("lstm", {}, ("a", "a")),
        ("transformer", {"n_heads": 2}, ("q", "q")),
        ("surnn", {"impl": "cpu", "gate": {"kind": "rhythm", "period_max": 64.0}}, ("g", "a")),
        ("s4d", {"d_state": 4}, ("c", "c")),
    ],
)
def test_model_table_extrapolation_matches_a_full_count(name, options, methods):
    """The table's length fits (made at L <= 256) equal a real count at a longer length."""
    mt = _load_table_script()
    cfg = {"d_model": 16, "n_layers": 1, "ffn_mult": 1.0, "dropout": 0.0, "pool": "mean"}
    cfg["options"] = options
    task = mt.TaskStandIn("standin", 450, 3, 9)
    got = mt.flops_at(name, task, cfg)
    assert (got["executed"][1], got["dense"][1]) == methods
    from surnn.harness.flops import count_flops

    real = count_flops(mt.build(name, task, cfg), mt.batch(task, 450))
    assert got["executed"][0] == real["executed"] and got["dense"][0] == real["dense"]
    if name == "surnn":  # the gate really skips work, and the fit sees it
        assert got["executed"][0] < got["dense"][0]
