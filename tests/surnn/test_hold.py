"""The mechanism of the paper's claim, for every implementation: a neuron whose gate is
closed keeps its state bit for bit across 1,000 steps, and a gradient crosses those steps
undiminished (the Jacobian of a closed step is the identity); nn.GRU's gradient across the
same span vanishes."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures import triton_interpreter_unless_cuda

triton_interpreter_unless_cuda()  # before the Triton kernels are imported

import surnn.ops  # noqa: E402
from surnn.hold import closed_span_check, window_params  # noqa: E402
from surnn.ops.reference import effective_gate, gru_cell  # noqa: E402

SPAN = 1000


@pytest.mark.parametrize(
    "impl, dtype, whole",
    [
        ("reference", torch.float64, True),
        ("cpu", torch.float64, True),
        ("compiled", torch.float64, True),
        ("compiled", torch.float32, True),
        # the interpreter runs fp32 only, one kernel launch per step: the window and the
        # closed span as two calls (the whole sequence in one call adds nothing it tests)
        ("triton", torch.float32, False),
    ],
)
def test_a_closed_neuron_keeps_its_state_and_its_gradient(impl, dtype, whole):
    r = closed_span_check(
        impl, open_steps=10, span=SPAN, hidden=4, batch=2, dtype=dtype, whole=whole
    )
    assert (r["gate_open_steps"], r["gate_closed_steps"]) == (10, SPAN)
    assert r["state_held"] and r["max_state_change"] == 0.0  # bit for bit, 1,000 steps
    assert r["jacobian_identity"] and r["grad_equal"]  # the gradient reaches x_0 unchanged
    if whole:
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert abs(r["grad_ratio"] - 1) < tol
    assert r["gru_grad_ratio"] < 1e-6  # a dense GRU's gradient has all but vanished


def test_the_check_sees_a_leaking_closed_step(monkeypatch):
    """A closed step that moves the state by one part in a million fails every check."""

    def leaky(x, h0, w_ih, w_hh, b_ih, b_hh, g, active=None, lengths=None):
        B, T = x.shape[:2]
        g = effective_gate(g, active, lengths, B, T)
        x_proj = torch.nn.functional.linear(x, w_ih, b_ih)
        h, outs = h0, []
        for t in range(T):
            f = gru_cell(x_proj[:, t], h, w_hh, b_hh)
            h = h + (g[t] + 1e-6 * (1 - g[t])) * (f - h)  # leaks where closed
            outs.append(h)
        return torch.stack(outs, 1), h

    monkeypatch.setattr(surnn.ops, "su_gru_reference", leaky)
    r = closed_span_check("reference", open_steps=10, span=100, hidden=4, batch=2)
    assert not r["state_held"] and r["max_state_change"] > 1e-6
    assert not r["jacobian_identity"] and not r["grad_equal"]


def test_window_params_open_exactly_the_window():
    from surnn.gates import build_gate

    gate = build_gate(
        3, 1, {"kind": "rhythm", "n_freqs": 1, "params": window_params(3, 400.0, 5, 20)}
    )
    with torch.no_grad():
        g, _ = gate(400)
    steps = g[:, 0].nonzero().flatten().tolist()
    assert steps == list(range(5, 25)) and torch.equal(g[:, 0], g[:, 2])
    with pytest.raises(ValueError, match="window length"):
        window_params(2, 10.0, 0, 10)
