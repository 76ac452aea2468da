"""The sequence-mixer interface of the backbone, and the suRNN mixer that puts the method's
layer behind it (the baselines implement the same interface in ``baselines/``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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

    def __init__(self, d_model: int, **kwargs: Any):
        super().__init__()
        self.d_model = d_model

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:  # pragma: no cover - interface
        raise NotImplementedError


class SuRNNMixer(Mixer):
    """The suRNN mixer: one SelectiveUpdateGRU layer (hidden = d_model by default),
    projected back to d_model when the hidden size differs. aux: ``update_rate`` (mean
    over valid positions), ``active_rate`` (fraction of updates computed) and, with a
    rate penalty configured, ``aux_loss``."""

    causal = True

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        gate: dict[str, Any] | None = None,
        impl: str = "auto",
    ):
        super().__init__(d_model)
        H = hidden_size or d_model
        self.rnn = SelectiveUpdateGRU(d_model, H, batch_first=True, gate=gate, impl=impl)
        self.out = nn.Linear(H, d_model) if d_model != H else nn.Identity()

    def forward(self, x, lengths):
        y, _ = self.rnn(x, lengths=lengths)
        aux: dict[str, Any] = {
            "update_rate": self.rnn.last_update_rate[0],
            "active_rate": self.rnn.last_active_rate[0],
        }
        if self.rnn.last_aux_loss is not None:
            aux["aux_loss"] = self.rnn.last_aux_loss
        return self.out(y), aux
