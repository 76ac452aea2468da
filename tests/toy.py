"""A tiny in-memory task for trainer tests (no files, no registry)."""

from __future__ import annotations

import numpy as np

from tasks.base import SequenceDataset, Splits, Task, make_collate, pack_sequences


class ToyTask(Task):
    """Class c draws its tokens from {c+1, c+4, c+7}; lengths 3..L so padding is exercised."""

    name = "toy"
    n_classes = 3
    input_kind = "tokens"
    vocab_size = 10
    max_len = 12
    dual = False

    def __init__(self, n_train: int = 96, n_eval: int = 30, seed: int = 0):
        super().__init__(".")
        rng = np.random.default_rng(seed)

        def make(n):
            labels = rng.integers(0, self.n_classes, size=n)
            seqs = [
                1 + c + 3 * rng.integers(0, 3, size=rng.integers(3, self.max_len + 1))
                for c in labels
            ]
            data, offsets = pack_sequences(seqs, np.int16)
            return SequenceDataset(data, offsets, labels)

        self._splits = Splits(make(n_train), make(n_eval), make(n_eval + 1), make_collate("tokens"))

    def splits(self) -> Splits:
        return self._splits
