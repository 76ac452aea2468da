"""The sequence-mixer interface shared by suRNN and every baseline."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Mixer(nn.Module):
    """Maps ``x: [B, L, D]`` with valid ``lengths: [B]`` to ``(y: [B, L, D], aux)``.

    Inputs are right-padded; outputs at valid positions must not depend on the padding.
    ``aux`` carries what the trainer logs (e.g. ``update_rate`` for selective-update
    layers) and optional ``aux_loss`` (a scalar added to the training loss).
    Subclasses take ``d_model`` first and their own options as keyword arguments, which
    come from ``configs/model/<name>.yaml``.
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


def valid_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """[B, L] bool, True at valid (non-padding) positions of right-padded sequences."""
    return torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]


def optim_hint(param: nn.Parameter, lr: float | None = None, weight_decay: float | None = None):
    """Attach optimizer hints (own learning rate, weight decay) that the trainer turns
    into parameter groups. Returns the parameter for chaining."""
    hints = dict(getattr(param, "_optim", {}))
    if lr is not None:
        hints["lr"] = lr
    if weight_decay is not None:
        hints["weight_decay"] = weight_decay
    param._optim = hints
    return param
