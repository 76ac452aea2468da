"""Datasets over memory-mapped arrays: flat variable-length sequences, index views, and
the seeded split whose indices a cache stores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset


class SequenceDataset(Dataset):
    """Variable-length sequences stored flat: ``seq i = data[offsets[i]:offsets[i+1]]``.

    ``data`` may be a memory-mapped uint8/int16 array; items are returned as numpy
    arrays and converted to tensors only in the collate function.
    """

    def __init__(self, data: np.ndarray, offsets: np.ndarray, labels: np.ndarray):
        if len(offsets) != len(labels) + 1:
            raise ValueError("offsets must have one more entry than labels")
        self.data, self.offsets, self.labels = data, offsets, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.data[a:b], int(self.labels[i])


class Subset(Dataset):
    """Index view of a dataset (split indices are stored in the cache)."""

    def __init__(self, base: Dataset, indices: np.ndarray):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]


def pack_sequences(seqs: Sequence[np.ndarray], dtype=np.int16) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate variable-length sequences into (flat data, offsets)."""
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    data = (
        np.concatenate([np.asarray(s, dtype=dtype) for s in seqs]) if seqs else np.zeros(0, dtype)
    )
    return data, offsets


#: the cache arrays that hold a task's train / val / test indices into one dataset
SPLIT_INDICES = ("train_idx", "val_idx", "test_idx")


def split_indices(train, val, test) -> dict[str, np.ndarray]:
    """The train / val / test indices under their cache names (``SPLIT_INDICES``)."""
    return dict(zip(SPLIT_INDICES, (train, val, test)))


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` by a fixed seed (indices are stored with the cache)."""
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([int(round(f * n)) for f in fractions[:-1]])
    return [np.sort(p) for p in np.split(perm, cuts)]
