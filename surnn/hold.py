"""The mechanism behind the paper's claim, checked directly: a closed neuron keeps its state.

With g[t, i] = 0 the update h_t = h_{t-1} + g (f - h_{t-1}) copies the state exactly, so the
Jacobian of a closed step is the identity: a gradient crosses any number of closed steps
unchanged. ``window_params`` writes a rhythm gate (the paper's formula, one sinusoid per
neuron) that is open on one window of steps only; ``closed_span_check`` runs the public
layer with it, closed for ``span`` steps after the window, and measures what is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from surnn.layer import SelectiveUpdateGRU


def window_params(
    n: int, period: float, start: float, length: float, edge_slope: float = 0.01
) -> dict[str, torch.Tensor]:
    """Rhythm-gate tensors (``RhythmGate(n_freqs=1, params=...)``) opening each of ``n``
    rhythms at steps ``start .. start + length - 1`` of every ``period`` steps and closing
    it elsewhere: a = b + A cos(omega (t - c)) with c the window's centre, b = -A cos(pi r)
    (r = length / period) and A such that a crosses 0 with slope ``edge_slope`` per step."""
    if not 0 < length < period:
        raise ValueError(f"window length {length} must be in (0, period={period})")
    w = 2 * math.pi / period
    r = length / period
    amp = edge_slope / (w * math.sin(math.pi * r))
    centre = start + length / 2 - 0.5
    return {
        "log_omega": torch.tensor([math.log(w)]),
        "alpha": torch.full((n, 1), amp),
        "phi": torch.full((n, 1), (math.pi / 2 - w * centre) % (2 * math.pi)),
        "bias": torch.full((n,), -amp * math.cos(math.pi * r)),
    }


def closed_span_check(
    impl: str = "reference",
    open_steps: int = 10,
    span: int = 1000,
    hidden: int = 16,
    inputs: int = 8,
    batch: int = 3,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    whole: bool = True,
) -> dict[str, Any]:
    """A 1-layer ``SelectiveUpdateGRU`` (``impl``) whose every neuron is open at steps
    ``0 .. open_steps - 1`` only (a frozen hand-set gate), then closed for ``span`` steps;
    the same weights in ``torch.nn.GRU`` beside it. The window and the closed span run as
    two calls (the second from the first's final state, its gate clock at ``open_steps``);
    with ``whole`` also as one sequence. L = w . h_last. Returns:

    - ``state_held``: every output of the closed span equals the state after the window,
      bit for bit (``max_state_change``: the largest difference, 0 when held);
    - ``jacobian_identity``: dL/d(state after the window) is w, bit for bit: every closed
      step's Jacobian is the identity;
    - ``grad_equal``: that gradient carried back through the window reaches the first input
      bit for bit as the gradient of w . (state after the window) does: undiminished;
    - ``grad_ratio`` (``whole``): ||dL/dx_0|| over the whole sequence in one call, divided by
      that of the loss taken right after the window (1 up to the rounding of the GEMMs,
      whose blocking depends on the sequence length);
    - ``gru_grad_ratio``: that ratio for nn.GRU across the same span (what a dense GRU keeps
      of the first input's gradient), and ``gru_grad_ratio_by_span`` after 10, 100 and
      ``span`` steps (its decay); ``gate_open_steps`` / ``gate_closed_steps``.
    """
    g = torch.Generator().manual_seed(seed)
    T = open_steps + span
    layer = SelectiveUpdateGRU(
        inputs,
        hidden,
        batch_first=True,
        impl=impl,
        gate={
            "kind": "rhythm",
            "n_freqs": 1,
            "frozen": True,
            "params": window_params(hidden, period=4.0 * T, start=0, length=open_steps),
        },
    ).to(dtype)
    gru = nn.GRU(inputs, hidden, batch_first=True).to(dtype)
    with torch.no_grad():
        for name, p in gru.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.4)
            getattr(layer, name).copy_(p)
    x = torch.randn(batch, T, inputs, generator=g, dtype=dtype)
    w = torch.randn(hidden, generator=g, dtype=dtype)

    def first_input_grad(model, steps):
        xs = x[:, :steps].clone().requires_grad_()
        out, _ = model(xs)
        (grad,) = torch.autograd.grad((out[:, -1] @ w).sum(), xs)
        return out.detach(), grad[:, 0]

    # the window, then the closed span from its final state
    xs = x[:, :open_steps].clone().requires_grad_()
    out_win, _ = layer(xs)
    h = out_win[:, -1]
    (grad_win,) = torch.autograd.grad((h @ w).sum(), xs, retain_graph=True)
    h_end = h.detach().requires_grad_()
    out_span, _ = layer(x[:, open_steps:], h_end[None], t0=open_steps)
    (dh,) = torch.autograd.grad((out_span[:, -1] @ w).sum(), h_end)
    (grad_chain,) = torch.autograd.grad(h, xs, grad_outputs=dh)
    held = out_span.detach() == h_end.detach()[:, None]
    change = float((out_span.detach() - h_end.detach()[:, None]).abs().max())
    result = {
        "impl": impl,
        "dtype": str(dtype).replace("torch.", ""),
        "open_steps": open_steps,
        "span": span,
        "state_held": bool(held.all()),
        "jacobian_identity": bool(torch.equal(dh, w.expand_as(dh))),
        "grad_equal": bool(torch.equal(grad_chain, grad_win)),
    }
    if whole:  # the same in one call over the whole sequence
        out_long, grad_long = first_input_grad(layer, T)
        late = out_long[:, open_steps:]
        after = out_long[:, open_steps - 1 : open_steps].expand_as(late)
        result["state_held"] = result["state_held"] and bool(torch.equal(late, after))
        change = max(change, float((late - after).abs().max()))
        result["grad_ratio"] = float(grad_long.norm() / grad_win[:, 0].norm())
    _, gru_short = first_input_grad(gru, open_steps)
    gru_by_span = {}
    for n in sorted({min(10, span), min(100, span), span}):
        _, gru_n = first_input_grad(gru, open_steps + n)
        gru_by_span[n] = float(gru_n.norm() / gru_short.norm())
    with torch.no_grad():
        gate, _ = layer.gates[0](T)
    result.update(
        max_state_change=change,
        gru_grad_ratio=gru_by_span[span],
        gru_grad_ratio_by_span=gru_by_span,
        gate_open_steps=int((gate > 0).any(1).sum()),
        gate_closed_steps=int((gate == 0).all(1).sum()),
    )
    return result
