"""SelectiveUpdateGRU (nn.GRU-compatible) and the ``surnn`` mixer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from surnn.errors import ConfigError
from surnn.gates import RhythmGate
from surnn.mixer import Mixer
from surnn.ops import su_gru
from surnn.registry import register_mixer


class SelectiveUpdateGRU(nn.Module):
    """A GRU whose neurons update only when their gate is open.

    Constructor, weight names and layout follow ``torch.nn.GRU`` (unidirectional), so
    ``load_state_dict`` from an ``nn.GRU`` works (``strict=False``: the gates add their
    own parameters). Input ``[B, T, D]`` with ``batch_first=True`` else ``[T, B, D]``;
    returns ``(output, h_n)`` with ``h_n: [num_layers, B, H]`` taken at each sequence's
    last valid step when ``lengths`` is given. After a call, ``last_gate`` holds each
    layer's gate ``[T, H]`` and ``last_update_rate`` the mean over valid positions.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        gate: dict[str, Any] | None = None,
        impl: str = "auto",
    ):
        super().__init__()
        if bidirectional:
            raise ConfigError(
                "SelectiveUpdateGRU is causal (as in the paper): bidirectional=True is not supported"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.impl = float(dropout), impl
        gate = dict(gate or {})
        H = hidden_size
        for k in range(num_layers):
            d = input_size if k == 0 else H
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(3 * H, d)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(3 * H, H)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(3 * H)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(3 * H)))
        self.gates = nn.ModuleList(RhythmGate(H, **gate) for _ in range(num_layers))
        self.reset_parameters()
        self.last_gate: list[torch.Tensor] = []
        self.last_update_rate: list[float] = []

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith(("weight_", "bias_")):
                nn.init.uniform_(p, -std, std)

    def layer_weights(self, k: int):
        b_ih = getattr(self, f"bias_ih_l{k}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{k}") if self.bias else None
        return getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), b_ih, b_hh

    def forward(
        self,
        input: torch.Tensor,
        hx: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = input if self.batch_first else input.transpose(0, 1)
        B, T, _ = x.shape
        H = self.hidden_size
        if hx is None:
            hx = x.new_zeros(self.num_layers, B, H)
        valid = None
        if lengths is not None:
            valid = (torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]).to(x.dtype)
        h_n, self.last_gate, self.last_update_rate = [], [], []
        for k in range(self.num_layers):
            g = self.gates[k](T, device=x.device, dtype=x.dtype)  # [T, H]
            self.last_gate.append(g.detach())
            if valid is None:
                self.last_update_rate.append(float(g.detach().mean()) if T else 0.0)
                g_eff = g
            else:
                # Padding steps are closed, so the state at the end is the last valid state.
                g_eff = g[None] * valid[:, :, None]
                n_valid = valid.sum().clamp(min=1)
                self.last_update_rate.append(float(g_eff.detach().sum() / (n_valid * H)))
            out, h = su_gru(x, hx[k], *self.layer_weights(k), g_eff, impl=self.impl)
            h_n.append(h)
            x = out
            if self.dropout and self.training and k < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, True)
        out = x if self.batch_first else x.transpose(0, 1)
        return out, torch.stack(h_n, 0)


@register_mixer("surnn", "sugru")
class SuRNNMixer(Mixer):
    """The suRNN mixer: one SelectiveUpdateGRU layer (hidden = d_model by default),
    projected back to d_model when the hidden size differs."""

    causal = True

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        gate: dict[str, Any] | None = None,
        impl: str = "auto",
        max_len: int | None = None,
    ):
        super().__init__(d_model)
        H = hidden_size or d_model
        self.rnn = SelectiveUpdateGRU(d_model, H, batch_first=True, gate=gate, impl=impl)
        self.out = nn.Linear(H, d_model) if H != d_model else nn.Identity()

    def forward(self, x, lengths):
        y, _ = self.rnn(x, lengths=lengths)
        return self.out(y), {"update_rate": self.rnn.last_update_rate[0]}
