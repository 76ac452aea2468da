"""Recurrent baselines: torch.nn.LSTM and torch.nn.GRU (cuDNN on GPU).

Sequences are packed with ``pack_padded_sequence`` so padding never enters the recurrence
(also in the reverse direction of a bidirectional layer, which starts at each sequence's
last valid step); outputs at padded positions are zero. A batch without padding skips the
packing and runs the plain kernel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from surnn.checks import boolean, int_at_least
from surnn.harness.mixer import Mixer


class _TorchRNNMixer(Mixer):
    """One torch RNN layer (hidden ``hidden_size``, default d_model), projected back to
    d_model by a linear map when its output width (x2 if bidirectional) differs."""

    rnn_cls: type[nn.RNNBase] = nn.LSTM

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        bidirectional: bool = False,
    ):
        super().__init__(d_model)
        H = int_at_least(1, optional=True).check("hidden_size", hidden_size) or d_model
        self.causal = not boolean().check("bidirectional", bidirectional)
        self.rnn = self.rnn_cls(d_model, H, batch_first=True, bidirectional=bidirectional)
        out = H * (2 if bidirectional else 1)
        self.out = nn.Linear(out, d_model) if out != d_model else nn.Identity()

    @property
    def stateful(self) -> bool:  # one direction only: a reverse pass has no carried state
        return self.causal

    def _run(self, x: torch.Tensor, lengths: torch.Tensor, hx=None):
        T = x.shape[1]
        lens = lengths.detach().to("cpu", torch.int64)
        if bool((lens == T).all()):
            y, h_n = self.rnn(x, hx)
        else:
            packed = pack_padded_sequence(
                x, lens.clamp(min=1), batch_first=True, enforce_sorted=False
            )
            y, h_n = self.rnn(packed, hx)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=T)
            if bool((lens == 0).any()):  # an empty sequence read one padding step: drop it
                y = y.masked_fill((lengths == 0).view(-1, 1, 1).to(y.device), 0.0)
        return self.out(y), h_n

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        return self._run(x, lengths)[0], {}

    def forward_state(self, x, lengths, state):
        """State: ``h`` [B, H] (and ``c`` for the LSTM) at each row's last valid step."""
        if not self.causal:
            return super().forward_state(x, lengths, state)
        hx = None
        if state is not None:
            hx = state["h"].unsqueeze(0)
            if "c" in state:
                hx = (hx, state["c"].unsqueeze(0))
        y, h_n = self._run(x, lengths, hx)
        if isinstance(h_n, tuple):
            return y, {}, {"h": h_n[0][0], "c": h_n[1][0]}
        return y, {}, {"h": h_n[0]}


class LSTMMixer(_TorchRNNMixer):
    """torch.nn.LSTM over the valid positions."""

    rnn_cls = nn.LSTM


class GRUMixer(_TorchRNNMixer):
    """torch.nn.GRU over the valid positions. Its weights load one to one into the
    ``surnn`` mixer (``surnn.layer.SelectiveUpdateGRU``), which equals it with the gate
    always open."""

    rnn_cls = nn.GRU
