"""surnn/layer.py: SelectiveUpdateGRU as a module (the op itself: test_ops.py)."""

from __future__ import annotations

import pytest
import torch

from surnn.errors import ConfigError
from surnn.layer import SelectiveUpdateGRU


def test_layer_rejects_bidirectional_and_bad_impl():
    with pytest.raises(ConfigError):
        SelectiveUpdateGRU(4, 4, bidirectional=True)
    with pytest.raises(ConfigError, match="impl"):
        SelectiveUpdateGRU(4, 4, impl="cuda-magic")


def test_rates_are_detached_tensors_and_the_penalty_keeps_its_gradient():
    """Rates stay on the device (no host sync per layer per step); the trainer reads them
    when it logs. The penalty term is differentiable in the gate."""
    torch.manual_seed(0)
    gate = {"kind": "rhythm", "init_rate": 0.3, "target_rate": 0.1, "rate_penalty": 1.0}
    rnn = SelectiveUpdateGRU(4, 8, num_layers=2, batch_first=True, gate=gate, impl="cpu")
    x, lens = torch.randn(3, 20, 4), torch.tensor([20, 7, 13])
    rnn(x, lengths=lens)
    for rates in (rnn.last_update_rate, rnn.last_active_rate):
        assert len(rates) == 2
        assert all(torch.is_tensor(r) and r.dim() == 0 and not r.requires_grad for r in rates)
    valid = (torch.arange(20)[:, None] < lens[None]).float()  # [T, B]
    g = rnn.last_gate[0]
    expected = (g.sum(1) * valid.sum(1)).sum() / (lens.sum() * 8)
    assert torch.allclose(rnn.last_update_rate[0], expected)
    assert rnn.last_aux_loss.requires_grad
    rnn.last_aux_loss.backward()
    assert rnn.gates[1].bias.grad.abs().sum() > 0


def test_nn_gru_weights_load_and_the_open_gate_equals_it():
    torch.manual_seed(0)
    ref = torch.nn.GRU(5, 6, num_layers=2, batch_first=True)
    su = SelectiveUpdateGRU(5, 6, num_layers=2, batch_first=True, gate={"kind": "open"}, impl="cpu")
    missing, unexpected = su.load_state_dict(ref.state_dict(), strict=False)
    assert not missing and not unexpected
    x = torch.randn(2, 9, 5)
    (y, h), (y2, h2) = ref(x), su(x)
    assert torch.allclose(y, y2, atol=1e-5) and torch.allclose(h, h2, atol=1e-5)
