"""Encoder -> N pre-norm residual blocks (mixer, GLU feed-forward) -> pooling -> head.

Tasks know nothing of models and mixers know nothing of tasks: the backbone reads the
task's input description (tokens or values, classes, dual) and builds any registered
mixer by name. Retrieval (``dual``) encodes both documents with the same backbone and
classifies ``[a, b, a*b, a-b]`` with a small MLP.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from surnn.errors import ConfigError
from surnn.harness.positions import Positions
from surnn.harness.registry import MIXERS
from surnn.utils import valid_mask


class GLUFeedForward(nn.Module):
    def __init__(self, d_model: int, mult: float = 2.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(d_model * mult)
        self.proj_in = nn.Linear(d_model, 2 * hidden)
        self.proj_out = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.drop(a * F.gelu(b)))


class Block(nn.Module):
    def __init__(self, mixer: nn.Module, d_model: int, ffn_mult: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = GLUFeedForward(d_model, ffn_mult, dropout) if ffn_mult > 0 else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x, lengths):
        y, aux = self.mixer(self.norm1(x), lengths)
        x = x + self.drop(y)
        if self.ffn is not None:
            x = x + self.drop(self.ffn(self.norm2(x)))
        return x, aux


class Encoder(nn.Module):
    """Shared sequence encoder: embedding/linear input -> blocks -> norm -> pooling."""

    def __init__(
        self,
        input_kind: str,
        vocab_size: int | None,
        input_dim: int | None,
        mixer: str,
        mixer_options: dict[str, Any],
        d_model: int,
        n_layers: int,
        ffn_mult: float,
        dropout: float,
        pool: Literal["mean", "last", "max"],
        max_len: int,
        pos_emb: str = "none",
    ):
        super().__init__()
        if input_kind == "tokens":
            self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        else:
            self.embed = nn.Linear(input_dim, d_model)
        mixer_cls = MIXERS.get(mixer)
        if "max_len" in inspect.signature(mixer_cls).parameters:
            mixer_options = {"max_len": max_len, **mixer_options}
        try:
            blocks = [
                Block(mixer_cls(d_model, **mixer_options), d_model, ffn_mult, dropout)
                for _ in range(n_layers)
            ]
        except TypeError as e:
            raise ConfigError(
                f"model={mixer}: bad mixer option ({e}); see configs/model/{mixer}.yaml "
                "for the options it takes"
            ) from e
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(d_model)
        self.pos = Positions(pos_emb, d_model, max_len, "model.pos_emb")
        if pool not in ("mean", "last", "max"):
            raise ConfigError(f"model.pool={pool!r}: expected one of mean, last, max")
        self.pool = pool
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h = self.drop(self.pos(self.embed(x)))
        aux: dict[str, Any] = {}
        aux_loss = None
        for i, blk in enumerate(self.blocks):
            h, a = blk(h, lengths)
            for k, v in a.items():
                if k == "aux_loss":
                    aux_loss = v if aux_loss is None else aux_loss + v
                else:
                    aux[f"layer{i}/{k}"] = v
        if aux_loss is not None:
            aux["aux_loss"] = aux_loss
        h = self.norm(h)
        mask = valid_mask(lengths, h.shape[1])
        if self.pool == "mean":
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(h.dtype)
        elif self.pool == "max":
            pooled = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        else:
            idx = (lengths - 1).clamp(min=0)
            pooled = h[torch.arange(h.shape[0], device=h.device), idx]
        return pooled, aux


class Model(nn.Module):
    """Classifier over a task's sequences built around one registered mixer."""

    def __init__(
        self,
        task,
        mixer: str,
        mixer_options: dict[str, Any] | None = None,
        d_model: int = 128,
        n_layers: int = 4,
        ffn_mult: float = 2.0,
        dropout: float = 0.1,
        pool: Literal["mean", "last", "max"] = "mean",
        head_hidden: int | None = None,
        pos_emb: str = "none",
    ):
        super().__init__()
        self.mixer_name = mixer
        self.dual = bool(task.dual)
        self.encoder = Encoder(
            task.input_kind,
            task.vocab_size,
            task.input_dim,
            mixer,
            dict(mixer_options or {}),
            d_model,
            n_layers,
            ffn_mult,
            dropout,
            pool,
            task.max_len,
            pos_emb,
        )
        if self.dual:
            hidden = head_hidden or d_model
            self.head = nn.Sequential(
                nn.Linear(4 * d_model, hidden), nn.GELU(), nn.Linear(hidden, task.n_classes)
            )
        else:
            self.head = nn.Linear(d_model, task.n_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """(logits, aux): aux holds 0-d tensors, ``aux_loss`` (the sum of the mixers'
        auxiliary losses, to add to the task loss; absent when there is none) and per-layer
        metrics ``layer{i}/update_rate`` etc. (a dual task averages its two encodings)."""
        a, aux = self.encoder(batch["x"], batch["lengths"])
        if not self.dual:
            return self.head(a), aux
        b, aux2 = self.encoder(batch["x2"], batch["lengths2"])
        for k, v in aux2.items():
            if k not in aux:
                aux[k] = v
            elif k == "aux_loss":
                aux[k] = aux[k] + v
            else:
                aux[k] = (aux[k] + v) / 2
        return self.head(torch.cat([a, b, a * b, a - b], dim=-1)), aux
