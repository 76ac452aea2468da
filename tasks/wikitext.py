"""WikiText-103 and WikiText-2 (Merity et al. 2016): word-level language modelling.

Sources, first found wins (``describe()["source"]`` records which):
  1. ``<data_dir>/wikitext-103/wiki.{train,valid,test}.tokens`` (the release's tokenized
     files; ``wikitext-2/`` for WikiText-2);
  2. ``<data_dir>/wikitext-103-raw/wiki.{train,valid,test}.raw`` (the raw release);
  3. ``<data_dir>/hub/Salesforce/wikitext/<config>`` (a ``datasets`` ``save_to_disk``
     folder), else ``datasets.load_dataset("Salesforce/wikitext", "<config>")`` (network,
     or the local Hugging Face cache with ``HF_HUB_OFFLINE=1``; ``hub: false`` skips it).
Offline without files: one DataError naming the files and where to get them.

Words: each line split on whitespace plus ``<eos>`` (the standard word-level setup, as
PyTorch's word_language_model and Transformer-XL read WikiText). The vocabulary is the
train split's word types (the release already maps rare words to ``<unk>``: 267,735 types
for WikiText-103, 33,278 for WikiText-2), sorted by count (ties: first seen), so ids suit
an adaptive softmax; input id = rank + 1 (0 = padding), target = rank. A valid/test word
missing from train (possible in the raw release only) maps to ``<unk>``; ``describe()``
counts them. Each split is one contiguous stream; the trainer cuts it into ``rows``
parallel rows and windows of ``max_len`` tokens and carries the recurrent state across the
windows of a row (truncated BPTT; ``carry_state``). Token arrays are cached under
``<data_dir>/cache/<task>/<key>/`` (key: the source files' size and mtime, or the hub
config).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from surnn.checks import boolean, int_at_least
from surnn.errors import ConfigError, DataError
from tasks.base import Splits, Task
from tasks.cache import file_signature, load_or_build
from tasks.hub import _offline_mode, hub_disk_dir, hub_reachable

log = logging.getLogger(__name__)

EOS, UNK = "<eos>", "<unk>"
SPLITS = (("train", "train"), ("val", "valid"), ("test", "test"))
HUB_NAME = "Salesforce/wikitext"
CACHE_FORMAT = 1
URL = "https://wikitext.smerity.com/{name}-v1.zip"  # the release archives


class TokenStream:
    """One split as a contiguous stream of ids (``tokens``, 1-D, memory-mapped)."""

    stream = True

    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)


def _no_collate(items):
    raise TypeError("language-modelling streams are batched by the trainer, not collated")


def words(lines: Iterable[str]) -> Iterable[str]:
    """The standard word-level reading: every line's words, then <eos>."""
    for line in lines:
        yield from line.split()
        yield EOS


def build_vocab(train_lines: Iterable[str]) -> list[str]:
    """Word types of the train split by count (descending), ties by first appearance."""
    counts = Counter()
    first: dict[str, int] = {}
    for w in words(train_lines):
        counts[w] += 1
        if w not in first:
            first[w] = len(first)
    return sorted(counts, key=lambda w: (-counts[w], first[w]))


def encode(lines: Iterable[str], index: dict[str, int]) -> tuple[np.ndarray, int]:
    """(ids int32 = rank + 1, number of words not in the vocabulary -> <unk>)."""
    unk = index.get(UNK)
    out, oov = [], 0
    for w in words(lines):
        i = index.get(w)
        if i is None:
            oov += 1
            i = unk
        out.append(i + 1)
    return np.asarray(out, dtype=np.int32), oov


class _WikiText(Task):
    name = "wikitext"
    objective = "lm"
    input_kind = "tokens"
    release = "wikitext-103"
    config = "wikitext-103-v1"
    default_cutoffs = (20000, 40000, 200000)

    def __init__(
        self,
        data_dir,
        max_len: int = 256,
        carry_state: Any = "auto",
        adaptive_cutoffs: list[int] | None = None,
        div_value: float = 4.0,
        hub: bool = True,
    ):
        super().__init__(data_dir)
        self.max_len = int_at_least(1).check("max_len", max_len)
        if not (isinstance(carry_state, bool) or carry_state == "auto"):
            raise ConfigError.option("carry_state", carry_state, "expected true, false or auto")
        boolean().check("hub", hub)
        self.carry_state = carry_state
        cut = self.default_cutoffs if adaptive_cutoffs is None else adaptive_cutoffs
        self.cutoffs_option = [int(c) for c in cut]
        self.adaptive_div_value = float(div_value)
        self.hub = bool(hub)
        self._loaded: tuple[dict, dict] | None = None

    # ---------------------------------------------------------------- sources

    def _files(self) -> tuple[list[Path], str] | None:
        for folder, ext in ((self.release, "tokens"), (self.release + "-raw", "raw")):
            paths = [self.data_dir / folder / f"wiki.{s}.{ext}" for _, s in SPLITS]
            if all(p.exists() for p in paths):
                return paths, f"release files {self.data_dir / folder}/wiki.*.{ext}"
        return None

    def _hub(self):
        """A DatasetDict of the hub config, or raise DataError naming every source."""
        disk = hub_disk_dir(self.data_dir, f"{HUB_NAME}/{self.config}")
        why = "hub: false"
        try:
            import datasets
        except ImportError:
            datasets, why = None, "the datasets package is not installed"
        if datasets is not None and disk.exists():
            return datasets.load_from_disk(str(disk)), f"save_to_disk folder {disk}"
        if datasets is not None and self.hub:
            why = None if _offline_mode() else hub_reachable()
            if why is None:
                try:
                    return (
                        datasets.load_dataset(HUB_NAME, self.config),
                        f"hub {HUB_NAME} {self.config}",
                    )
                except Exception as e:  # noqa: BLE001 - offline hubs raise many types
                    why = f"datasets.load_dataset({HUB_NAME!r}, {self.config!r}) failed: " + (
                        type(e).__name__
                    )
        raise DataError(
            f"task={self.name}: no {self.release}/wiki.{{train,valid,test}}.tokens (or "
            f"{self.release}-raw/wiki.*.raw) under {self.data_dir}, no {disk}, and the hub "
            f"({why}); unzip {URL.format(name=self.release)} into {self.data_dir}, or set "
            "data_dir to the folder that holds it"
        )

    def _read(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self._loaded is not None:
            return self._loaded
        found = self._files()
        if found is not None:
            paths, source = found
            key = {"format": CACHE_FORMAT, "files": file_signature(paths)}
        else:
            ds, source = self._hub()
            paths, key = None, {"format": CACHE_FORMAT, "hub": source}

        def lines(i: int):
            if paths is not None:
                with open(paths[i], encoding="utf-8") as f:
                    yield from f
            else:
                split = {"valid": "validation"}.get(SPLITS[i][1], SPLITS[i][1])
                yield from ds[split]["text"]

        def build(_tmp: Path):
            log.info("%s: reading %s (once; cached)", self.name, source)
            vocab = build_vocab(lines(0))
            index = {w: i for i, w in enumerate(vocab)}
            arrays, oov = {}, {}
            for i, (name, _) in enumerate(SPLITS):
                arrays[name], oov[name] = encode(lines(i), index)
                if oov[name] and UNK not in index:
                    raise DataError(
                        f"task={self.name}: {oov[name]} words of the {name} split are "
                        f"not in the train vocabulary and it has no {UNK}; use the "
                        "release's tokenized files (wiki.*.tokens)"
                    )
            return arrays, {"source": source, "oov": oov, "vocab": vocab}

        cache = load_or_build(self, self.name, key, ("train", "val", "test"), build)
        self._loaded = (cache.arrays, cache.meta)
        return self._loaded

    # ---------------------------------------------------------------- Task

    def _attributes(self, meta) -> None:
        V = len(meta["vocab"])
        self.vocab = meta["vocab"]
        self.n_classes, self.vocab_size = V, V + 1
        self.adaptive_cutoffs = [c for c in self.cutoffs_option if 0 < c < V]

    def prepare(self) -> _WikiText:
        """Read (or load the cache) and set the vocabulary-dependent attributes."""
        _, meta = self._read()
        self._attributes(meta)
        return self

    def splits(self) -> Splits:
        arrays, meta = self._read()
        self._attributes(meta)
        return Splits(
            TokenStream(arrays["train"]),
            TokenStream(arrays["val"]),
            TokenStream(arrays["test"]),
            _no_collate,
        )

    def describe(self) -> dict[str, Any]:
        arrays, meta = self._read()
        d = super().describe()
        d.update(
            source=meta["source"],
            encoding="words (line.split() + <eos>), id = frequency rank + 1, 0 = padding",
            tokens={k: int(len(v)) for k, v in arrays.items()},
            oov=meta["oov"],
            window=self.max_len,
            carry_state_option=self.carry_state,
            adaptive_cutoffs=self.adaptive_cutoffs,
        )
        return d


class WikiText103(_WikiText):
    name = "wikitext103"
    release = "wikitext-103"
    config = "wikitext-103-v1"
    # Transformer-XL's clusters (Dai et al. 2019); Baevski & Auli 2019 use (20000, 60000)
    default_cutoffs = (20000, 40000, 200000)


class WikiText2(_WikiText):
    name = "wikitext2"
    release = "wikitext-2"
    config = "wikitext-2-v1"
    default_cutoffs = (2000, 10000)  # harness choice (33,278 types)
