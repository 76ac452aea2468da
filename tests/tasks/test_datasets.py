"""tasks/datasets.py (flat sequences, index views, the seeded split and its cache names) and
Splits.from_indices, the splits of every task that caches indices into one dataset."""

from __future__ import annotations

import numpy as np

from tasks.base import Splits
from tasks.collate import make_collate
from tasks.datasets import (
    SPLIT_INDICES,
    SequenceDataset,
    pack_sequences,
    seeded_split,
    split_indices,
)


def test_seeded_split_is_a_sorted_partition_fixed_by_the_seed():
    parts = seeded_split(10, [0.8, 0.1, 0.1], seed=3)
    assert [len(p) for p in parts] == [8, 1, 1]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert all((np.diff(p) > 0).all() for p in parts)
    again = seeded_split(10, [0.8, 0.1, 0.1], seed=3)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))
    assert not np.array_equal(seeded_split(10, [0.8, 0.1, 0.1], seed=4)[0], parts[0])


def test_splits_from_indices_are_views_of_one_dataset_by_the_cached_names():
    data, offsets = pack_sequences([np.full(i + 1, i) for i in range(6)])
    base = SequenceDataset(data, offsets, np.arange(6) % 2)
    arrays = split_indices(np.array([0, 2, 4]), np.array([1]), np.array([3, 5]))
    assert tuple(arrays) == SPLIT_INDICES
    collate = make_collate("tokens")
    s = Splits.from_indices(base, arrays, collate)
    assert [len(s.train), len(s.val), len(s.test)] == [3, 1, 2]
    x, y = s.test[1]
    assert x.tolist() == [5] * 6 and y == 1
    assert s.collate is collate
