"""The sequence-mixer interface of the backbone, and the suRNN mixer that puts the method's
layer behind it (the baselines implement the same interface in ``baselines/``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from surnn.checks import int_at_least
from surnn.errors import ConfigError
from surnn.gates import GATES, gate_options, hold_stats
from surnn.layer import SelectiveUpdateGRU


class Mixer(nn.Module):
    """Maps ``x: [B, L, D]`` with valid ``lengths: [B]`` to ``(y: [B, L, D], aux)``.

    Inputs are right-padded; outputs at valid positions must not depend on the padding.
    ``aux`` holds 0-d tensors: what the trainer logs (``update_rate``, ``active_rate`` for
    selective-update layers; read with ``float()`` only when logged, so no host sync per
    step) and an optional ``aux_loss`` that the backbone adds to the model's loss.
    Subclasses take ``d_model`` first and their own options as keyword arguments, which
    come from ``configs/model/<name>.yaml``; a mixer that needs the task's longest
    sequence declares a ``max_len`` argument and the backbone passes it.
    """

    #: True when position t depends only on positions <= t.
    causal: bool = True
    #: True when ``forward_state`` carries the recurrent state across calls (truncated
    #: BPTT over consecutive windows of a stream, as language models are trained).
    stateful: bool = False

    def __init__(self, d_model: int, **kwargs: Any):
        super().__init__()
        self.d_model = d_model

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:  # pragma: no cover - interface
        raise NotImplementedError

    def forward_state(
        self, x: torch.Tensor, lengths: torch.Tensor, state: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        """``forward`` starting from ``state`` (None: the zero state) and returning the
        state after each row's last valid position: a dict of tensors whose first dim is
        the batch (so the caller can select rows and detach)."""
        raise ConfigError(
            f"{type(self).__name__} cannot carry a state across windows (stateful=False)"
        )


def gate_options_of(kind: str) -> dict[str, Any]:
    """The options of a gate kind (none for an unknown kind: the layer names the error)."""
    return gate_options(kind) if kind in GATES else {}


class SuRNNMixer(Mixer):
    """The suRNN mixer: one SelectiveUpdateGRU layer (hidden = d_model by default),
    projected back to d_model when the hidden size differs. A rhythm gate's bank scales with
    the task's longest sequence (``max_len``, passed as the gate's ``seq_len`` unless set). aux: ``update_rate`` (mean
    over valid positions), ``active_rate`` (fraction of updates computed) and, with a
    rate penalty configured, ``aux_loss``."""

    causal = True
    stateful = True

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        gate: dict[str, Any] | None = None,
        impl: str = "auto",
        max_len: int | None = None,
    ):
        super().__init__(d_model)
        H = int_at_least(1, optional=True).check("hidden_size", hidden_size) or d_model
        gate = dict(gate or {})
        kind = gate.get("kind") or "rhythm"
        if max_len and gate.get("seq_len") is None and "seq_len" in gate_options_of(kind):
            gate["seq_len"] = int(max_len)  # the task's longest sequence sets the bank
        self.rnn = SelectiveUpdateGRU(d_model, H, batch_first=True, gate=gate, impl=impl)
        self.out = nn.Linear(H, d_model) if d_model != H else nn.Identity()

    def forward(self, x, lengths):
        y, _ = self.rnn(x, lengths=lengths)
        return self._project(y), self._aux()

    def _project(self, y):
        """``out(y)``; the identity without a module call (~1.5 us a layer at batch 1)."""
        out = self.out
        return y if type(out) is nn.Identity else out(y)

    def forward_state(self, x, lengths, state):
        """State: ``h`` [B, H] and ``t`` [B], the steps read so far: the rhythm gate's clock
        runs on across windows (``t0``), as over one long sequence."""
        h0 = t0 = None
        if state is not None:
            h0, t0 = state["h"].unsqueeze(0), int(state["t"][0])
        y, h_n = self.rnn(x, h0, lengths=lengths, t0=t0 or 0)
        t = (t0 or 0) + lengths.to(torch.long)
        return self._project(y), self._aux(), {"h": h_n[0], "t": t}

    @torch.no_grad()
    def gate_stats(self, T: int, windows: dict[str, tuple[int, int]]) -> dict[str, int]:
        """Holding statistics of the layer's time-only gate over T steps (``hold_stats``);
        empty for a per-sample gate."""
        gate = self.rnn.gates[0]
        if not gate.time_only:
            return {}
        g, _ = gate(T, None, dtype=torch.float32)
        return hold_stats(g, windows["input"], windows["hold"])

    def _aux(self) -> dict[str, Any]:
        last = self.rnn.last
        aux: dict[str, Any] = {
            "update_rate": last.update_rate[0],
            "active_rate": last.active_rate[0],
        }
        if last.aux_loss is not None:
            aux["aux_loss"] = last.aux_loss
        return aux
