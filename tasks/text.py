"""Text (LRA): IMDB sentiment from raw UTF-8 bytes, 2 classes, 4096 bytes.

Sources, first found wins (``describe()["source"]`` records which):
  1. ``<data_dir>/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` (the Stanford archive);
  2. ``<data_dir>/hub/stanfordnlp/imdb``, a ``datasets`` ``save_to_disk`` folder;
  3. the hub data set ``stanfordnlp/imdb`` through ``datasets.load_dataset`` (needs network
     or the Hugging Face cache; skipped with ``hub: false``).
Tokens: byte b -> id b + 1, 0 = padding (vocab 257); each review keeps its first
``max_len`` bytes. Splits: LRA trains on the 25,000 train reviews and uses the 25,000 test
reviews for both validation and test (``val_fraction: 0``); ``val_fraction > 0`` instead
holds out a seeded part of train. Split indices are stored with the cache.

This module also holds the byte-sequence datasets Retrieval uses (flat uint8 arrays).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from surnn.checks import between, boolean, int_at_least
from surnn.errors import DataError
from tasks.base import Splits, Task, check_no_unknown
from tasks.cache import files_digest, load_or_build
from tasks.collate import make_collate
from tasks.datasets import SPLIT_INDICES, seeded_split, split_indices
from tasks.hub import require_hub
from tasks.npy import NpyStream

log = logging.getLogger(__name__)

BYTE_VOCAB = 257  # 256 byte values shifted by one, 0 = padding
HUB_NAME = "stanfordnlp/imdb"
ACL_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
CACHE_FORMAT = 1  # bump when the encoding changes


# ----------------------------------------------------------------------------- helpers


class ByteDataset(Dataset):
    """Byte strings stored flat (uint8, memory-mapped); an item is (ids = bytes + 1, label)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, labels: np.ndarray):
        self.data, self.offsets, self.labels = data, offsets, labels

    def __len__(self) -> int:
        return len(self.labels)

    def _doc(self, k: int) -> np.ndarray:
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        return self.data[a:b].astype(np.int16) + 1

    def __getitem__(self, i: int):
        return self._doc(i), int(self.labels[i])


class ByteWriter:
    """Documents streamed into ``<folder>/data.npy`` (uint8, never held in memory), each cut
    to its first ``max_len`` bytes; ``close()`` returns their offsets."""

    def __init__(self, folder: Path, max_len: int):
        self.stream, self.max_len = NpyStream(folder / "data.npy"), max_len
        self.offsets, self.truncated = [0], 0

    def add(self, doc: bytes) -> None:
        self.truncated += len(doc) > self.max_len
        doc = doc[: self.max_len]
        self.stream.write(doc)
        self.offsets.append(self.offsets[-1] + len(doc))

    def close(self) -> np.ndarray:
        self.stream.close()
        return np.asarray(self.offsets, np.int64)


class BytePairDataset(ByteDataset):
    """Document pairs: documents 2i and 2i + 1 of the flat store; item (ids1, ids2, label)."""

    def __getitem__(self, i: int):
        return self._doc(2 * i), self._doc(2 * i + 1), int(self.labels[i])


# ----------------------------------------------------------------------------- task


def _acl_files(root: Path, split: str) -> list[tuple[Path, int]]:
    files: list[tuple[Path, int]] = []
    for label, sub in ((0, "neg"), (1, "pos")):
        d = root / split / sub
        if not d.is_dir():
            raise DataError(
                f"{d} is missing: expected the aclImdb layout {root}/{{train,test}}/{{neg,pos}}/"
                "*.txt; unpack aclImdb_v1.tar.gz into the data folder"
            )

        def key(p: Path):
            head = p.stem.split("_")[0]
            return (0, int(head), p.name) if head.isdigit() else (1, 0, p.name)

        files += [(p, label) for p in sorted(d.glob("*.txt"), key=key)]
    return files


class Text(Task):
    """IMDB reviews as byte sequences (LRA Text)."""

    name = "text"
    n_classes = 2
    input_kind = "tokens"
    vocab_size = BYTE_VOCAB

    def __init__(
        self,
        data_dir,
        max_len: int = 4096,
        val_fraction: float = 0.0,
        split_seed: int = 0,
        hub: bool = True,
        **options: Any,
    ):
        check_no_unknown("text", options, "max_len, val_fraction, split_seed, hub")
        super().__init__(data_dir, max_len=max_len, val_fraction=val_fraction)
        self.max_len = int_at_least(1).check("max_len", max_len)
        between(0, 1, hi_open=True).check("val_fraction", val_fraction)
        int_at_least(0).check("split_seed", split_seed)
        boolean().check("hub", hub)
        self.val_fraction, self.split_seed, self.hub = float(val_fraction), split_seed, hub
        self.source = None
        self.info: dict[str, Any] = {}

    def _read(self) -> tuple[str, list, dict[str, list[tuple[bytes, int]]]]:
        """(source description, signature, split -> iterator of (bytes, label))."""
        acl = self.data_dir / "aclImdb"
        if acl.is_dir():
            files = {s: _acl_files(acl, s) for s in ("train", "test")}
            every = [f for s in ("train", "test") for f, _ in files[s]]
            sig = [[str(acl), len(files["train"]), len(files["test"]), files_digest(every)]]

            def gen(split):
                for p, y in files[split]:
                    yield p.read_bytes(), y

            return f"aclImdb folder {acl}", sig, {s: gen(s) for s in files}
        dd, src = require_hub(self, HUB_NAME, "IMDB data", f"{acl}/ (unpack {ACL_URL} there)")
        for s in ("train", "test"):
            if s not in dd:
                raise DataError(f"{src}: has no {s!r} split (found {list(dd)}); re-save it")

        def gen_hub(split):
            for k, row in enumerate(dd[split]):
                y = row.get("label")
                if y not in (0, 1):
                    raise DataError(f"{src} split {split} row {k}: label {y!r} is not 0 or 1")
                yield row["text"].encode("utf-8"), y

        sig = [[src, dd["train"].num_rows, dd["test"].num_rows, dd["train"]._fingerprint]]
        return src, sig, {s: gen_hub(s) for s in ("train", "test")}

    def _build(self, tmp: Path, rows: dict) -> tuple[dict, dict]:
        """Stream every review's bytes into ``tmp/data.npy``; the offsets, labels and split
        indices and the metadata are returned for the cache."""
        log.info("text: building the byte cache from %s", self.source)
        docs, labels, counts = ByteWriter(tmp, self.max_len), [], {}
        for split in ("train", "test"):
            n0 = len(labels)
            for b, y in rows[split]:
                docs.add(b)
                labels.append(y)
            counts[split] = len(labels) - n0
        offsets = docs.close()
        n_train = counts["train"]
        if n_train == 0 or counts["test"] == 0:
            raise DataError(f"task=text: {self.source} has an empty split ({counts})")
        test = np.arange(n_train, n_train + counts["test"])
        if self.val_fraction > 0:
            tr, va = seeded_split(
                n_train, [1 - self.val_fraction, self.val_fraction], self.split_seed
            )
        else:
            tr, va = np.arange(n_train), test
        arrays = {
            "offsets": offsets,
            "labels": np.asarray(labels, np.uint8),
            **split_indices(tr, va, test),
        }
        return arrays, {"source": self.source, "counts": counts, "truncated": docs.truncated}

    def splits(self) -> Splits:
        src, sig, rows = self._read()
        self.source = src
        key = {
            "format": CACHE_FORMAT,
            "source": sig,
            "max_len": self.max_len,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed if self.val_fraction > 0 else None,
        }
        names = ["data", "offsets", "labels", *SPLIT_INDICES]
        cache = load_or_build(self, self.name, key, names, lambda tmp: self._build(tmp, rows))
        a, meta = cache.arrays, cache.meta
        self.cache_path = cache.path
        self.info = {"counts": meta["counts"], "truncated": meta["truncated"]}
        base = ByteDataset(a["data"], a["offsets"], a["labels"])
        return Splits.from_indices(base, a, make_collate("tokens"))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "encoding": "bytes: id = byte + 1, 0 = pad",
            "source": self.source,
            "val": "test split (LRA)"
            if self.val_fraction == 0
            else f"{self.val_fraction} of train",
            **self.info,
        }
