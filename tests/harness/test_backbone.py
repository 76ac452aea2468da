"""Backbone: input positions, pooling over valid positions, dual encoding."""

from __future__ import annotations

import pytest
import torch

from surnn.errors import ConfigError
from surnn.harness.backbone import Model
from surnn.harness.config import BackboneConfig
from surnn.harness.positions import sinusoidal_positions
from tests.fixtures import ToyTask


def _batch():
    x = torch.randint(1, 10, (3, 9))
    lengths = torch.tensor([9, 7, 3])
    x[1, 7:] = 0
    x[2, 3:] = 0
    return {"x": x, "lengths": lengths, "y": torch.tensor([0, 1, 2])}


@pytest.mark.parametrize("pos_emb", ["sinusoidal", "learned"])
def test_input_positions_are_added_and_padding_invariant(pos_emb):
    torch.manual_seed(0)
    task = ToyTask(n_train=8, n_eval=4)
    m = Model(
        task,
        "transformer",
        {"positions": "none"},
        d_model=16,
        n_layers=2,
        dropout=0.0,
        pos_emb=pos_emb,
    ).eval()
    torch.manual_seed(0)
    ref = Model(
        task, "transformer", {"positions": "none"}, d_model=16, n_layers=2, dropout=0.0
    ).eval()
    ref.load_state_dict(m.state_dict(), strict=False)
    b = _batch()
    out, _ = m(b)
    assert not torch.allclose(out, ref(b)[0])  # the transformer sees order only through positions
    b2 = dict(b, x=torch.cat([b["x"], torch.randint(1, 10, (3, 3))], 1))  # more right padding
    torch.testing.assert_close(m(b2)[0], out, rtol=1e-5, atol=1e-5)


def test_learned_positions_reject_longer_sequences():
    task = ToyTask(n_train=8, n_eval=4)  # max_len 12
    m = Model(task, "lstm", {}, d_model=8, n_layers=1, pos_emb="learned")
    b = _batch()
    b["x"] = torch.randint(1, 10, (3, 20))
    with pytest.raises(ConfigError, match="exceeds the table size 12"):
        m(b)
    # the key is checked once, by its schema (run.py and validate make the model from it)
    with pytest.raises(ConfigError, match="^model.pos_emb='rotary': expected one of"):
        BackboneConfig(name="lstm", pos_emb="rotary")


def test_sinusoidal_positions_values():
    pe = sinusoidal_positions(4, 6)
    assert pe[0, 0::2].abs().max() == 0 and torch.allclose(pe[0, 1::2], torch.ones(3))
    assert pe[3, 0].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item())
