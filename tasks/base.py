"""The Task interface: what a task declares and the splits it hands the trainer.

A batch is a dict:
  ``x``: LongTensor [B, L] (token ids, 0 = padding) or FloatTensor [B, L, C] (values),
  ``lengths``: LongTensor [B] (valid positions; padding is never inferred from values),
  ``y``: LongTensor [B];
  dual tasks (Retrieval) add ``x2`` and ``lengths2``.
The parts a task builds on: datasets.py (flat sequence storage, index views, seeded
splits), collate.py (padding into a batch), cache.py (memory-mapped array caches under
``<data_dir>/cache/``), npy.py (streamed .npy files) and pool.py (the worker processes of
data preparation).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from surnn.errors import ConfigError
from tasks.datasets import SPLIT_INDICES, Subset


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    collate: Callable[[list], dict[str, torch.Tensor]]

    @classmethod
    def from_indices(cls, base: Dataset, arrays, collate) -> Splits:
        """Index views of ``base`` by the cached ``arrays`` ``train_idx``, ``val_idx`` and
        ``test_idx`` (datasets.SPLIT_INDICES)."""
        train, val, test = (Subset(base, arrays[k]) for k in SPLIT_INDICES)
        return cls(train, val, test, collate)


#: "no target here" in per-position targets (torch's cross-entropy default; the harness's
#: surnn.harness.objectives.IGNORE_INDEX is the same value, a test checks it)
IGNORE_INDEX = -100


class Task:
    """A task over sequences. Subclasses set the attributes below (in ``__init__`` when
    they depend on options) and implement ``splits``.

    ``objective`` (surnn/harness/objectives.py): ``classify`` (``y [B]`` classes, the
    default), ``tokens`` (``y [B, L]`` classes, ``IGNORE_INDEX`` where nothing is scored),
    ``lm`` (splits are token streams: ``tokens`` 1-D ids and ``stream = True``; targets are
    the next ids minus 1; ``n_classes`` the vocabulary, ids sorted by frequency for an
    adaptive softmax with ``adaptive_cutoffs``), ``regress`` (``y [B]`` floats)."""

    name: str = "task"
    objective: str = "classify"
    n_classes: int = 2
    input_kind: Literal["tokens", "values"] = "tokens"
    vocab_size: int | None = None  # tokens: ids in [0, vocab_size), 0 = padding
    input_dim: int | None = None  # values: channels per position
    max_len: int = 0
    dual: bool = False

    def __init__(self, data_dir: str | os.PathLike, **options: Any):
        self.data_dir = Path(data_dir).expanduser()
        self.options = options

    def splits(self) -> Splits:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What a run records about its data (lengths, vocabulary, sizes)."""
        return {
            "name": self.name,
            "objective": self.objective,
            "n_classes": self.n_classes,
            "input_kind": self.input_kind,
            "vocab_size": self.vocab_size,
            "input_dim": self.input_dim,
            "max_len": self.max_len,
            "dual": self.dual,
        }


def check_no_unknown(task: str, unknown: dict[str, Any], valid: str) -> None:
    """Options a task's constructor does not take are a ConfigError listing the valid ones."""
    if unknown:
        raise ConfigError(
            f"task={task}: unknown options {sorted(unknown)}; valid: {valid} "
            f"(configs/task/{task}.yaml)"
        )
