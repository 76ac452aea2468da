"""Right-padding a list of examples into the batch format of tasks/base.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch


def _pad(seqs: Sequence[np.ndarray], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    L = int(lengths.max()) if len(seqs) else 0
    tail = tuple(np.asarray(seqs[0]).shape[1:]) if len(seqs) else ()
    out = torch.zeros((len(seqs), L, *tail), dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.from_numpy(
            np.asarray(s).astype(np.int64 if dtype == torch.long else np.float32)
        )
    return out, lengths


def make_collate(
    input_kind: Literal["tokens", "values"],
    dual: bool = False,
    value_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[list], dict[str, torch.Tensor]]:
    """Right-pad a list of ``(seq, label)`` (or ``(seq1, seq2, label)``) into a batch.

    Tokens become LongTensor [B, L]; values become FloatTensor [B, L, C] (a 1-D sequence
    gets C = 1) after ``value_transform`` (e.g. uint8 pixels -> normalised scalars).
    """
    dtype = torch.long if input_kind == "tokens" else torch.float32

    def encode(seqs):
        x, lengths = _pad(seqs, dtype)
        if input_kind == "values":
            if x.dim() == 2:
                x = x.unsqueeze(-1)
            if value_transform is not None:
                x = value_transform(x)
        return x, lengths

    def collate(items: list) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        batch["x"], batch["lengths"] = encode([it[0] for it in items])
        if dual:
            batch["x2"], batch["lengths2"] = encode([it[1] for it in items])
        batch["y"] = torch.tensor([int(it[-1]) for it in items], dtype=torch.long)
        return batch

    return collate
