"""Baseline mixers: S4D conv == recurrent, right padding never changes valid outputs (every
registered mixer, through the backbone), gru == surnn with the gate open, attention masks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from baselines.rnn import GRUMixer, LSTMMixer
from baselines.s4d import S4DMixer
from baselines.transformer import AttentionMixer
from surnn.errors import ConfigError
from surnn.harness.backbone import Model
from surnn.harness.cli import CONFIG_DIR
from surnn.harness.mixer import SuRNNMixer
from surnn.harness.registry import MIXERS


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm().clamp(min=1e-30)).detach())


def default_options(name: str) -> dict:
    cfg = OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml")
    return OmegaConf.to_container(cfg.get("options", {}) or {}, resolve=True)


def task(dual: bool = False, kind: str = "tokens") -> SimpleNamespace:
    """A stand-in with the Task attributes the backbone reads."""
    return SimpleNamespace(
        name="standin",
        n_classes=5,
        input_kind=kind,
        vocab_size=11 if kind == "tokens" else None,
        input_dim=None if kind == "tokens" else 3,
        max_len=40,
        dual=dual,
    )


# ------------------------------------------------------------------------ S4D modes


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_s4d_convolution_equals_recurrence(bidirectional, init):
    torch.manual_seed(0)
    m = S4DMixer(8, d_state=16, init=init, bidirectional=bidirectional).eval()
    x = torch.randn(3, 50, 8)
    lengths = torch.tensor([50, 31, 1])
    y_conv, _ = m(x, lengths)
    m.mode = "recurrent"
    y_rec, _ = m(x, lengths)
    assert rel_err(y_conv, y_rec) < 1e-4
    # and the kernel is not trivial: the output depends on inputs 20 steps back
    x2 = x.clone()
    x2[0, 10] += 1.0
    m.mode = "conv"
    assert (m(x2, lengths)[0][0, 30] - y_conv[0, 30]).abs().max() > 1e-4


def test_s4d_step_streams_the_same_outputs():
    torch.manual_seed(1)
    m = S4DMixer(6, d_state=8, init="inv").eval()
    x = torch.randn(2, 25, 6)
    y, _ = m(x, torch.tensor([25, 25]))
    state, outs = None, []
    for t in range(25):
        o, state = m.step(x[:, t], state)
        outs.append(o)
    assert rel_err(torch.stack(outs, 1), y) < 1e-4
    with pytest.raises(ConfigError, match="bidirectional"):
        S4DMixer(6, d_state=8, bidirectional=True).step(x[:, 0])


def test_s4d_init_and_optimizer_hints():
    from surnn.harness.config import OptimConfig
    from surnn.harness.trainer import param_groups

    lin = S4DMixer(4, d_state=8, init="lin", lr_A=2e-3, lr_dt=None)
    inv = S4DMixer(4, d_state=8, init="inv")
    n = torch.arange(4.0)
    assert torch.allclose(lin.ssm.A_imag[0], torch.pi * n)
    assert torch.allclose(inv.ssm.A_imag[0], 8 / torch.pi * (8 / (2 * n + 1) - 1))
    assert torch.allclose(lin.ssm.log_A_real.exp(), torch.full((4, 4), 0.5))
    dt = lin.ssm.log_dt.exp()
    assert bool(((dt >= 1e-3) & (dt <= 1e-1)).all())
    groups = param_groups(lin, OptimConfig(lr=0.01, weight_decay=0.05))
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_param[id(lin.ssm.A_imag)] == (2e-3, 0.0)
    assert by_param[id(lin.ssm.log_A_real)] == (2e-3, 0.0)
    assert by_param[id(lin.ssm.log_dt)] == (0.01, 0.0)  # lr_dt null: the optimizer's lr
    assert by_param[id(lin.out.weight)] == (0.01, 0.05)
    for bad in ({"init": "legs"}, {"d_state": 7}, {"mode": "scan"}, {"output": "relu"}):
        with pytest.raises(ConfigError):
            S4DMixer(4, **bad)


# ------------------------------------------------------------------- right padding


def _mixer_variants():
    out = [(name, default_options(name)) for name in MIXERS.names()]
    out += [
        ("lstm", {"bidirectional": True, "hidden_size": 12}),
        ("gru", {"bidirectional": True}),
        ("s4d", {**default_options("s4d"), "bidirectional": True}),
        ("transformer", {**default_options("transformer"), "causal": True}),
        ("transformer", {**default_options("transformer"), "positions": "learned"}),
    ]
    return out


VARIANTS = _mixer_variants()


@pytest.mark.parametrize(
    "name,options", VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)]
)
def test_right_padding_never_changes_valid_outputs(name, options):
    """Every registered mixer, in the backbone: extra right padding (filled with non-zero
    garbage) changes neither the mixer outputs at valid positions nor the prediction."""
    torch.manual_seed(0)
    for pool in ("mean", "last"):
        model = Model(
            task(), name, options, d_model=16, n_layers=2, ffn_mult=1.0, dropout=0.0, pool=pool
        ).eval()
        lengths = torch.tensor([20, 13, 1, 7])
        x = torch.randint(1, 11, (4, 20))
        x[torch.arange(20)[None, :] >= lengths[:, None]] = 0
        x_long = torch.cat([x, torch.randint(1, 11, (4, 9))], dim=1)  # garbage, not id 0
        seen: list[torch.Tensor] = []
        hook = model.encoder.blocks[-1].mixer.register_forward_hook(
            lambda mod, inp, out, seen=seen: seen.append(out[0])
        )
        with torch.no_grad():
            logits, _ = model({"x": x, "lengths": lengths})
            logits_long, _ = model({"x": x_long, "lengths": lengths})
        hook.remove()
        short, long = seen
        valid = torch.arange(20)[None, :] < lengths[:, None]
        assert torch.isfinite(long).all() and torch.isfinite(logits_long).all()
        assert (short[valid] - long[:, :20][valid]).abs().max() < 1e-4, (name, pool)
        assert (logits - logits_long).abs().max() < 1e-4, (name, pool)


@pytest.mark.parametrize("name", ["gru", "s4d", "transformer"])
def test_right_padding_dual_and_values_inputs(name):
    """Retrieval-style dual inputs and value (pixel scalar) inputs, per-document padding."""
    torch.manual_seed(0)
    model = Model(
        task(dual=True, kind="values"), name, default_options(name), d_model=8, n_layers=1
    ).eval()
    la, lb = torch.tensor([9, 4]), torch.tensor([3, 9])
    a, b = torch.randn(2, 9, 3), torch.randn(2, 9, 3)
    pad = torch.randn(2, 5, 3) * 100
    with torch.no_grad():
        y1, _ = model({"x": a, "lengths": la, "x2": b, "lengths2": lb})
        y2, _ = model(
            {
                "x": torch.cat([a, pad], 1),
                "lengths": la,
                "x2": torch.cat([b, pad], 1),
                "lengths2": lb,
            }
        )
    assert (y1 - y2).abs().max() < 1e-4


# ------------------------------------------------------------------- gru == surnn open


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_gru_equals_surnn_with_gate_open(impl):
    torch.manual_seed(0)
    gru = GRUMixer(10, hidden_size=14).eval()
    su = SuRNNMixer(10, hidden_size=14, gate={"kind": "open"}, impl=impl).eval()
    missing, unexpected = su.load_state_dict(gru.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("rnn.gates") for k in missing)
    x = torch.randn(3, 17, 10)
    lengths = torch.tensor([17, 9, 2])
    with torch.no_grad():
        y_gru, _ = gru(x, lengths)
        y_su, aux = su(x, lengths)
    valid = torch.arange(17)[None, :] < lengths[:, None]
    assert aux["update_rate"] == pytest.approx(1.0)
    assert (y_gru[valid] - y_su[valid]).abs().max() < 1e-5
    # a different weight would show: perturbing suRNN's recurrence changes the output
    with torch.no_grad():
        su.rnn.weight_hh_l0.add_(0.1)
        assert (su(x, lengths)[0][valid] - y_gru[valid]).abs().max() > 1e-3


def test_lstm_padded_outputs_are_zero_and_empty_sequences_work():
    torch.manual_seed(0)
    m = LSTMMixer(6, bidirectional=True).eval()
    x = torch.randn(3, 8, 6)
    with torch.no_grad():
        y, _ = m(x, torch.tensor([8, 3, 0]))
    assert torch.isfinite(y).all()
    # the output projection maps a zero state to its bias: padded rows equal it exactly
    assert torch.allclose(y[1, 3:], m.out.bias.expand(5, 6)) and torch.allclose(
        y[2], m.out.bias.expand(8, 6)
    )


# ------------------------------------------------------------------------ attention


def test_attention_masks_padding_and_future():
    torch.manual_seed(0)
    m = AttentionMixer(8, n_heads=2, causal=True).eval()
    x = torch.randn(2, 12, 8)
    lengths = torch.tensor([12, 0])  # a fully padded sequence: no NaN anywhere
    with torch.no_grad():
        y, _ = m(x, lengths)
        assert torch.isfinite(y).all() and (y[1] == 0).all()
        x2 = x.clone()
        x2[0, 7:] += 5.0  # the future does not reach a causal layer's past
        y2, _ = m(x2, lengths)
        y_nopad, _ = m(x[:1], torch.tensor([12]))  # unmasked (is_causal) path agrees
    assert (y2[0, :7] - y[0, :7]).abs().max() < 1e-6
    assert (y2[0, 7:] - y[0, 7:]).abs().max() > 1e-3
    assert (y_nopad[0] - y[0]).abs().max() < 1e-5


def test_attention_option_errors():
    with pytest.raises(ConfigError, match="n_heads"):
        AttentionMixer(10, n_heads=3)
    with pytest.raises(ConfigError, match="positions"):
        AttentionMixer(8, positions="rotary")
    with pytest.raises(ConfigError, match="max_len"):
        AttentionMixer(8, positions="learned")
    m = AttentionMixer(8, positions="learned", max_len=4)
    with pytest.raises(ConfigError, match="exceeds"):
        m(torch.randn(1, 5, 8), torch.tensor([5]))
