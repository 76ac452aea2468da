"""Generated memory tasks: deterministic per seed, labels equal a direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from surnn.errors import ConfigError
from surnn.harness.objectives import IGNORE_INDEX as HARNESS_IGNORE
from surnn.harness.registry import TASKS
from tasks.base import IGNORE_INDEX
from tasks.memory import BLANK, CUE, FIRST_SYMBOL, Adding, CopyMemory, SelectiveCopy


def test_ignore_index_is_the_harness_one():
    assert IGNORE_INDEX == HARNESS_IGNORE == -100


def _items(ds, n):
    return [ds[i] for i in range(n)]


@pytest.mark.parametrize(
    "cls, opts",
    [
        (SelectiveCopy, {"length": 64, "n_tokens": 5, "vocab": 4}),
        (CopyMemory, {"delay": 30, "n_copy": 4}),
        (Adding, {"length": 40}),
    ],
)
def test_splits_are_fixed_by_the_seed(cls, opts):
    a = cls(".", seed=3, n_val=6, n_test=5, **opts).splits()
    b = cls(".", seed=3, n_val=6, n_test=5, **opts).splits()
    c = cls(".", seed=4, n_val=6, n_test=5, **opts).splits()
    assert len(a.val) == 6 and len(a.test) == 5
    assert a.train.endless and not a.val.endless
    for split in ("train", "val", "test"):
        for (x1, y1), (x2, y2) in zip(_items(getattr(a, split), 5), _items(getattr(b, split), 5)):
            assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    differ = [not np.array_equal(p[0], q[0]) for p, q in zip(_items(a.val, 5), _items(c.val, 5))]
    assert all(differ)
    # val, test and train are different draws
    assert not np.array_equal(a.val[0][0], a.test[0][0])
    assert not np.array_equal(a.val[0][0], a.train[0][0])
    # a fixed pool when n_train is set
    assert len(cls(".", seed=3, n_train=7, **opts).splits().train) == 7


def test_selective_copy_labels_are_the_symbols_in_order():
    t = SelectiveCopy(".", length=200, n_tokens=16, vocab=16, n_val=20)
    assert t.max_len == 216 and t.n_classes == 16 and t.vocab_size == 19
    assert t.objective == "tokens"
    for x, y in _items(t.splits().val, 20):
        body = x[:200]
        symbols = [int(v) - FIRST_SYMBOL for v in body if v >= FIRST_SYMBOL]  # direct
        assert len(symbols) == 16
        assert set(np.unique(body)) <= {BLANK, *range(FIRST_SYMBOL, FIRST_SYMBOL + 16)}
        assert (x[200:] == CUE).all()
        assert list(y[200:]) == symbols
        assert (y[:200] == IGNORE_INDEX).all()


def test_selective_copy_defaults_are_the_mamba_paper_s():
    t = TASKS.get("selective_copy")(".")
    assert (t.length, t.n_tokens, t.vocab) == (4096, 16, 14)  # 14 symbols + noise + cue = 16
    x, y = t.splits().val[0]
    assert len(x) == 4096 + 16 and (y != IGNORE_INDEX).sum() == 16


@pytest.mark.parametrize("score", ["recall", "all"])
def test_copy_memory_labels_copy_the_prefix_after_the_delay(score):
    t = CopyMemory(".", delay=50, n_copy=10, vocab=8, score=score, n_val=10)
    assert t.max_len == 70
    for x, y in _items(t.splits().val, 10):
        symbols = x[:10] - FIRST_SYMBOL
        assert ((symbols >= 0) & (symbols < 8)).all()
        assert (x[10:60] == BLANK).all() and x[60] == CUE and (x[61:] == BLANK).all()
        assert np.array_equal(y[60:], symbols)
        rest = IGNORE_INDEX if score == "recall" else 8  # the blank class
        assert (y[:60] == rest).all()
    assert t.n_classes == (8 if score == "recall" else 9)


def test_copy_memory_delay_up_to_ten_thousand():
    t = CopyMemory(".", delay=10_000, n_val=1)
    x, y = t.splits().val[0]
    assert len(x) == 10_020 and x[10_010] == CUE


@pytest.mark.parametrize("halves", [True, False])
def test_adding_target_is_the_sum_of_the_marked_values(halves):
    t = Adding(".", length=30, marker_halves=halves, n_val=50)
    assert t.objective == "regress" and t.input_dim == 2
    for x, y in _items(t.splits().val, 50):
        marked = np.flatnonzero(x[:, 1] == 1.0)
        assert len(marked) == 2
        if halves:
            assert marked[0] < 15 <= marked[1]
        assert y == pytest.approx(float(x[marked, 0].astype(np.float64).sum()), abs=1e-6)


def test_collate_shapes():
    t = SelectiveCopy(".", length=20, n_tokens=3, vocab=4)
    s = t.splits()
    b = s.collate(_items(s.val, 4))
    assert b["x"].shape == b["y"].shape == (4, 23) and b["lengths"].tolist() == [23] * 4
    a = Adding(".", length=12).splits()
    b = a.collate(_items(a.val, 3))
    assert b["x"].shape == (3, 12, 2) and b["y"].shape == (3,)


@pytest.mark.parametrize(
    "cls, opts, match",
    [
        (SelectiveCopy, {"n_tokens": 10, "length": 5}, "n_tokens=10"),
        (CopyMemory, {"delay": 0}, "delay=0"),
        (CopyMemory, {"score": "most"}, "score='most'"),
        (Adding, {"length": 1}, "at least 2"),
        (Adding, {"n_val": 0}, "n_val=0"),
    ],
)
def test_bad_options_are_one_line(cls, opts, match):
    with pytest.raises(ConfigError, match=match):
        cls(".", **opts)


def test_copy_memory_offset_moves_the_symbols_and_keeps_the_cue():
    t = CopyMemory(".", delay=50, n_copy=4, offset=20, n_val=200)
    assert t.max_len == 58 and t.memory_windows == {"input": (0, 23), "hold": (23, 54)}
    starts = set()
    for x, y in _items(t.splits().val, 200):
        pos = np.flatnonzero(x >= FIRST_SYMBOL)
        assert len(pos) == 4 and pos[-1] - pos[0] == 3  # contiguous
        starts.add(int(pos[0]))
        assert x[54] == CUE and np.array_equal(y[54:], x[pos] - FIRST_SYMBOL)
        assert (x[: pos[0]] == BLANK).all() and (x[pos[-1] + 1 : 54] == BLANK).all()
    assert starts == set(range(20))  # every offset in [0, 20) occurs
    plain = CopyMemory(".", delay=50, n_copy=4)
    assert plain.memory_windows == {"input": (0, 4), "hold": (4, 54)}
    assert "offset" not in plain.describe()["options"]  # as before the option existed
    with pytest.raises(ConfigError, match=r"^offset=60: expected an integer in \[0, delay=50\]"):
        CopyMemory(".", delay=50, offset=60)
