"""Memory tasks generated from a seed, no files: selective copy, copy memory, adding.

Example ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split, i])``
(split 0 train, 1 val, 2 test), so validation and test are fixed by ``seed`` alone, the
same for every run seed and model. Training with ``n_train: null`` draws fresh examples at
every step (an endless split read in order: step k reads examples k*B .. (k+1)*B - 1, so
the seed and the step fix them and a resumed run reads the same ones); an integer
``n_train`` gives a fixed pool of that many, shuffled per epoch like any data set.

Token ids: 0 padding, 1 blank (the noise / delay filler), 2 the recall cue, then the
symbols (symbol s has id s + 3). Targets are symbol indices ``0 .. vocab - 1`` at the
recall positions and ``IGNORE_INDEX`` elsewhere (per-position objective ``tokens``).

- ``selective_copy`` (Gu & Dao 2023, "Mamba", sec. 4.1 / app. E.1; length 4096 and 16
  tokens as there): ``n_tokens`` symbols at random positions (sorted, distinct) among
  ``length`` blanks, then ``n_tokens`` cues; at the k-th cue the model outputs the k-th
  symbol. Sequence length ``length + n_tokens``. ``vocab`` counts the symbols: 14 by default,
  so that with the blank (noise) and the cue the input has 16 tokens, as in the copying
  generator of the S4 repository that Mamba's selective copying uses (a dictionary of 16:
  noise 0, symbols 1..14, marker 15).
- ``copy_memory`` (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): ``n_copy``
  symbols, ``delay`` blanks, one cue, ``n_copy - 1`` blanks; the model outputs the symbols
  in order at the last ``n_copy`` positions (from the cue on). Length ``2 n_copy + delay``
  (Arjovsky's T is ``delay + 1``). ``offset: k`` starts the symbols at a random step
  ``o`` in ``[0, k)`` of each example, blanks before them, the cue and the recall
  positions where they are without an offset (so the delay is ``delay - o``): a model
  cannot rely on the symbols' exact position, only on their order and on the cue. ``score: recall`` scores those positions only;
  ``score: all`` scores every position, the others with the class ``blank`` (= vocab), as
  in Arjovsky et al., whose memoryless baseline loss is ``n_copy ln(vocab) / length``.
- ``adding`` (Hochreiter & Schmidhuber 1997; Le et al. 2015): ``length`` pairs (value
  uniform in [0, 1], marker); two markers are 1, one in each half (``marker_halves``) or
  anywhere (distinct); the target is the sum of the two marked values (``regress``, MSE;
  always predicting 1 scores about 0.167).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from surnn.checks import int_at_least, is_int, one_of
from surnn.errors import ConfigError
from tasks.base import IGNORE_INDEX, Splits, Task

PAD, BLANK, CUE, FIRST_SYMBOL = 0, 1, 2, 3
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
ENDLESS = 2**40  # the length of an endless training split (never reached)


def _positive(**values: Any) -> None:
    for k, v in values.items():
        int_at_least(1).check(k, v)


class Generated(Dataset):
    """Example ``i`` = ``make(default_rng([seed, split, i]))``; ``endless`` when n is None."""

    def __init__(self, make, seed: int, split: str, n: int | None):
        self.make, self.seed, self.code = make, int(seed), SPLIT_CODES[split]
        self.endless = n is None
        self.n = ENDLESS if n is None else int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.make(np.random.default_rng([self.seed, self.code, int(i)]))


def collate_tokens(items: list) -> dict[str, torch.Tensor]:
    """(ids, targets) pairs of equal-length sequences -> x, lengths, y [B, L]."""
    x = torch.from_numpy(np.stack([it[0] for it in items]).astype(np.int64))
    y = torch.from_numpy(np.stack([it[1] for it in items]).astype(np.int64))
    return {"x": x, "lengths": torch.full((len(items),), x.shape[1], dtype=torch.long), "y": y}


def collate_values(items: list) -> dict[str, torch.Tensor]:
    """(values [L, C], target) pairs -> x [B, L, C] float, lengths, y [B] float."""
    x = torch.from_numpy(np.stack([it[0] for it in items]).astype(np.float32))
    y = torch.tensor([float(it[1]) for it in items], dtype=torch.float32)
    return {"x": x, "lengths": torch.full((len(items),), x.shape[1], dtype=torch.long), "y": y}


class _Generated(Task):
    """Shared: seeded splits of generated examples."""

    def __init__(self, data_dir, seed: int = 0, n_train=None, n_val=1000, n_test=1000):
        super().__init__(data_dir)
        int_at_least(1, optional=True).check("n_train", n_train)  # null: fresh every step
        _positive(n_val=n_val, n_test=n_test)
        int_at_least(0).check("seed", seed)
        self.seed, self.n_train, self.n_val, self.n_test = seed, n_train, n_val, n_test

    collate = staticmethod(collate_tokens)

    def example(self, rng: np.random.Generator):  # pragma: no cover - interface
        raise NotImplementedError

    def splits(self) -> Splits:
        make = self.example
        return Splits(
            Generated(make, self.seed, "train", self.n_train),
            Generated(make, self.seed, "val", self.n_val),
            Generated(make, self.seed, "test", self.n_test),
            self.collate,
        )

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            objective=self.objective,
            source=f"generated (seed {self.seed}; train: "
            + ("fresh examples every step" if self.n_train is None else f"{self.n_train}")
            + ")",
            encoding="ids: 0 pad, 1 blank, 2 cue, symbol s -> s + 3"
            if self.input_kind == "tokens"
            else "values: (value, marker) per step",
            options=self.options_used(),
        )
        return d

    def options_used(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError


class SelectiveCopy(_Generated):
    name = "selective_copy"
    objective = "tokens"
    input_kind = "tokens"

    def __init__(self, data_dir, length=4096, n_tokens=16, vocab=14, **kw):
        super().__init__(data_dir, **kw)
        _positive(length=length, n_tokens=n_tokens, vocab=vocab)
        if n_tokens > length:
            raise ConfigError.option(
                "n_tokens",
                n_tokens,
                f"that many symbols cannot fit among length={length} positions; use "
                "n_tokens <= length",
            )
        self.length, self.n_tokens, self.vocab = length, n_tokens, vocab
        self.n_classes = vocab
        self.vocab_size = vocab + FIRST_SYMBOL
        self.max_len = length + n_tokens

    def example(self, rng):
        L, n = self.length, self.n_tokens
        pos = np.sort(rng.choice(L, n, replace=False))
        sym = rng.integers(0, self.vocab, n)
        x = np.full(L + n, BLANK, dtype=np.int16)
        x[pos] = sym + FIRST_SYMBOL
        x[L:] = CUE
        y = np.full(L + n, IGNORE_INDEX, dtype=np.int16)
        y[L:] = sym
        return x, y

    def options_used(self):
        return {"length": self.length, "n_tokens": self.n_tokens, "vocab": self.vocab}


MAX_DELAY = 100_000


class CopyMemory(_Generated):
    name = "copy_memory"
    objective = "tokens"
    input_kind = "tokens"

    def __init__(self, data_dir, delay=1000, n_copy=10, vocab=8, score="recall", offset=0, **kw):
        super().__init__(data_dir, **kw)
        _positive(delay=delay, n_copy=n_copy, vocab=vocab)
        if delay > MAX_DELAY:
            raise ConfigError.option("delay", delay, f"expected at most {MAX_DELAY}")
        one_of("recall", "all").check("score", score)
        if not (is_int(offset) and 0 <= offset <= delay):
            raise ConfigError.option(
                "offset",
                offset,
                f"expected an integer in [0, delay={delay}] (the symbols start at a random "
                "step below it; 0: at step 0)",
            )
        self.delay, self.n_copy, self.vocab, self.score = delay, n_copy, vocab, score
        self.offset = offset
        self.n_classes = vocab + (1 if score == "all" else 0)
        self.vocab_size = vocab + FIRST_SYMBOL
        self.max_len = 2 * n_copy + delay

    def example(self, rng):
        n, D = self.n_copy, self.delay
        sym = rng.integers(0, self.vocab, n)
        o = int(rng.integers(0, self.offset)) if self.offset else 0  # drawn after sym
        x = np.full(2 * n + D, BLANK, dtype=np.int16)
        x[o : o + n] = sym + FIRST_SYMBOL
        x[n + D] = CUE
        y = np.full(2 * n + D, self.vocab if self.score == "all" else IGNORE_INDEX, np.int16)
        y[n + D :] = sym
        return x, y

    @property
    def memory_windows(self) -> dict[str, tuple[int, int]]:
        """Where the task's information sits, for gate statistics (never shown to a model):
        ``input`` the steps that may hold a symbol, ``hold`` the steps from the last one
        that may to the cue. A neuron open in ``input`` and closed through ``hold`` carries
        what it read across the delay unchanged."""
        n, D, o = self.n_copy, self.delay, max(self.offset - 1, 0)
        return {"input": (0, n + o), "hold": (n + o, n + D)}

    def options_used(self):
        out = {
            "delay": self.delay,
            "n_copy": self.n_copy,
            "vocab": self.vocab,
            "score": self.score,
        }
        if self.offset:  # absent when 0: runs made before the option describe the same data
            out["offset"] = self.offset
        return out


class Adding(_Generated):
    name = "adding"
    objective = "regress"
    input_kind = "values"
    input_dim = 2
    n_classes = 0
    collate = staticmethod(collate_values)

    def __init__(self, data_dir, length=1000, marker_halves=True, **kw):
        super().__init__(data_dir, **kw)
        if not (is_int(length) and length >= 2):
            raise ConfigError.option(
                "length", length, "expected an integer of at least 2 (two marked values)"
            )
        self.length, self.marker_halves = length, bool(marker_halves)
        self.max_len = length

    def example(self, rng):
        T = self.length
        values = rng.random(T)
        if self.marker_halves:
            half = T // 2
            marks = np.array([rng.integers(0, half), rng.integers(half, T)])
        else:
            marks = rng.choice(T, 2, replace=False)
        x = np.zeros((T, 2), dtype=np.float32)
        x[:, 0] = values
        x[marks, 1] = 1.0
        return x, float(values[marks].sum())

    def options_used(self):
        return {"length": self.length, "marker_halves": self.marker_halves}
