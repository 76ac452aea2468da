"""Recurrent baselines: torch.nn.LSTM (cuDNN on GPU)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from surnn.mixer import Mixer
from surnn.registry import register_mixer


@register_mixer("lstm")
class LSTMMixer(Mixer):
    """torch.nn.LSTM over the valid positions (packed, so padding never enters)."""

    def __init__(self, d_model: int, hidden_size: int | None = None, bidirectional: bool = False, max_len=None):
        super().__init__(d_model)
        H = hidden_size or d_model
        self.causal = not bidirectional
        self.rnn = nn.LSTM(d_model, H, batch_first=True, bidirectional=bidirectional)
        out = H * (2 if bidirectional else 1)
        self.out = nn.Linear(out, d_model) if out != d_model else nn.Identity()

    def forward(self, x, lengths):
        T = x.shape[1]
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=T)
        return self.out(y), {}
