"""surnn/harness/streams.py: a language-model stream read in windows. Training: each
micro-batch (and rank) of a step reads its own rows, the pass restarts with a reset; evaluation:
every token once over the ranks; the carried state's rows; whether the state is carried."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from surnn.errors import ConfigError
from surnn.harness.streams import (
    carry_state,
    detached_rows,
    eval_windows,
    is_stream,
    train_windows,
)


class Stream:
    stream = True

    def __init__(self, n: int):
        self.tokens = np.arange(1, n + 1)

    def __len__(self) -> int:
        return len(self.tokens)


TASK = SimpleNamespace(name="lm", max_len=5, carry_state="auto")


def test_training_micro_batches_and_ranks_read_their_own_rows():
    # 8 rows (2 per micro-batch x 2 micro-batches x 2 ranks) of 12 predictions: 2 windows of 5
    tokens = np.arange(1, 98)
    seen = {}
    for rank in range(2):
        it = train_windows(tokens, TASK, micro_bs=2, grad_accum=2, start=0, rank=rank, world=2)
        for k in range(6):  # three steps: windows 0, 1, then 0 again
            b = next(it)
            assert b["reset"] == (k // 2 % 2 == 0) and b["x"].shape == (2, 5)
            seen.setdefault(k // 2, []).append(b["x"][:, 0].tolist())
    for w, firsts in seen.items():
        starts = sorted(sum(firsts, []))
        assert starts == [12 * r + 1 + 5 * (w % 2) for r in range(8)]  # every row once
    resumed = train_windows(tokens, TASK, micro_bs=2, grad_accum=2, start=3, rank=1, world=2)
    again = train_windows(tokens, TASK, micro_bs=2, grad_accum=2, start=0, rank=1, world=2)
    for _ in range(3):
        next(again)
    assert torch.equal(next(resumed)["x"], next(again)["x"])


def test_a_stream_too_short_for_the_rows_is_one_line_with_the_fix():
    with pytest.raises(ConfigError, match="lower trainer.batch_size"):
        next(train_windows(np.arange(1, 8), TASK, micro_bs=4, grad_accum=1, start=0))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_reads_every_token_once_over_the_ranks(world):
    ds = Stream(50)
    targets = []
    for rank in range(world):
        for b in eval_windows("val", ds, 5, 2, None, rank, world):
            for i, n in enumerate(b["lengths"].tolist()):
                targets += b["y"][i, :n].tolist()
    assert sorted(targets) == list(range(1, 50))  # each next token, offset 1


def test_evaluation_of_the_first_windows_says_so(caplog):
    ds = Stream(50)
    n = sum(int(b["lengths"].sum()) for b in eval_windows("val", ds, 5, 2, 3, 0, 1))
    assert n == 15 and "evaluating the first 16 of 50 tokens" in caplog.text


def test_the_carried_state_of_chosen_rows_is_detached():
    h = torch.arange(6.0, requires_grad=True).reshape(3, 2) * 1
    state = [{"h": h, "t": torch.tensor([5, 6, 7])}]
    rows = detached_rows(state, torch.tensor([2, 0]))
    assert rows[0]["h"].tolist() == [[4.0, 5.0], [0.0, 1.0]] and not rows[0]["h"].requires_grad
    assert rows[0]["t"].tolist() == [7, 5]
    assert detached_rows(state, None)[0]["h"].shape == (3, 2) and detached_rows(None, None) is None


def test_whether_the_state_is_carried(caplog):
    def model(stateful):
        enc = SimpleNamespace(stateful=stateful)
        return SimpleNamespace(encoder=enc, layer_kinds=["gru" if stateful else "s4d"])

    def task(want):
        return SimpleNamespace(name="lm", max_len=8, carry_state=want)

    assert carry_state(task("auto"), model(True)) and carry_state(task(True), model(True))
    assert not carry_state(task(False), model(True))
    assert not carry_state(task("auto"), model(False)) and "zero state" in caplog.text
    with pytest.raises(ConfigError, match="s4d cannot carry"):
        carry_state(task(True), model(False))
    assert is_stream(Stream(3)) and not is_stream(SimpleNamespace(tokens=None, stream=True))
