"""Position signals added to a sequence: the backbone's input embedding (``model.pos_emb``)
and the Transformer mixer's per-layer ``positions`` use this one module."""

from __future__ import annotations

import math

import torch
from torch import nn

from surnn.errors import ConfigError

KINDS = ("none", "sinusoidal", "learned")


def sinusoidal_positions(L: int, d: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[L, d]: sin at even and cos at odd channels, wavelengths 2 pi .. 10000 * 2 pi."""
    pos = torch.arange(L, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d)
    )
    pe = torch.zeros(L, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe.to(dtype)


class Positions(nn.Module):
    """Adds a position signal to ``x: [B, L, d]``: ``none``, ``sinusoidal`` (fixed) or
    ``learned`` (a table of ``max_len`` rows). ``kind`` is one of ``KINDS``, checked where
    the option is defined (``model.pos_emb`` by the backbone's schema, the Transformer's
    ``positions`` by its constructor); ``option`` names the config key in errors."""

    def __init__(self, kind: str, d_model: int, max_len: int | None, option: str):
        super().__init__()
        self.kind, self.option = kind, option
        if kind == "learned":
            if not max_len:
                raise ConfigError.option(
                    option, kind, f"needs the task's max_len; use {option}=sinusoidal"
                )
            self.table = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        if self.kind == "sinusoidal":
            return x + sinusoidal_positions(L, x.shape[-1], x.device, x.dtype)
        if self.kind == "learned":
            if self.table.shape[0] < L:
                raise ConfigError(
                    f"{self.option}=learned: sequence length {L} exceeds the table size "
                    f"{self.table.shape[0]} (the task's max_len); use {self.option}=sinusoidal"
                )
            return x + self.table[:L].to(x.dtype)
        return x
