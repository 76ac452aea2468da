"""Retrieval (LRA): do two ACL Anthology papers cite each other? Byte-level, dual encoder.

Files: ``<data_dir>/tsv_data/new_aan_pairs.{train,eval,test}.tsv``, no header, rows
``label<TAB>id1<TAB>id2<TAB>text1<TAB>text2`` with the label written as an integer or a
float (``1.0``). As in the LRA pipeline each text is cut to its first ``doc_bytes``
(10,000) bytes, byte-encoded (id = byte + 1, 0 = pad, vocab 257) and truncated to
``max_len`` (4000). The TSVs are streamed row by row into a memory-mapped uint8 cache
(never the whole file in memory: the train file is large). A malformed row or a label
other than 0/1 is a DataError naming the file and line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from surnn.checks import int_at_least
from surnn.errors import DataError
from tasks.base import Splits, Task, check_no_unknown
from tasks.cache import file_signature, load_or_build
from tasks.collate import make_collate
from tasks.datasets import SPLIT_INDICES, split_indices
from tasks.text import BYTE_VOCAB, BytePairDataset, ByteWriter

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train", "val": "eval", "test": "test"}
EXPECTED_ROWS = {"train": 147_086, "val": 18_090, "test": 17_437}
CACHE_FORMAT = 1


def tsv_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / "tsv_data" / f"new_aan_pairs.{SPLIT_FILES[split]}.tsv"


def parse_label(raw: bytes, path: Path, lineno: int) -> int:
    """0 or 1 from '0', '1', '0.0', '1.0'; anything else is a DataError."""
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if v not in (0.0, 1.0):
        raise DataError(
            f"{path}:{lineno}: label {raw[:20].decode('utf-8', 'replace')!r} is not 0 or 1 "
            "(written as 0/1 or 0.0/1.0); fix or delete that row"
        )
    return int(v)


def stream_rows(path: Path, doc_bytes: int) -> Any:
    """Yield (line number, label, text1 bytes, text2 bytes) one row at a time."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            cols = line.split(b"\t")
            if len(cols) != 5:
                raise DataError(
                    f"{path}:{lineno}: expected 5 tab-separated columns "
                    f"(label, id1, id2, text1, text2), got {len(cols)}; fix or delete that row"
                )
            yield (
                lineno,
                parse_label(cols[0], path, lineno),
                cols[3][:doc_bytes],
                cols[4][:doc_bytes],
            )


class Retrieval(Task):
    """AAN document pairs as byte sequences for the dual encoder (LRA Retrieval)."""

    name = "retrieval"
    n_classes = 2
    input_kind = "tokens"
    vocab_size = BYTE_VOCAB
    dual = True

    def __init__(self, data_dir, max_len: int = 4000, doc_bytes: int = 10_000, **options: Any):
        check_no_unknown("retrieval", options, "max_len, doc_bytes")
        super().__init__(data_dir, max_len=max_len, doc_bytes=doc_bytes)
        self.max_len = int_at_least(1).check("max_len", max_len)
        self.doc_bytes = int_at_least(1).check("doc_bytes", doc_bytes)
        self.info: dict[str, Any] = {}

    def files(self) -> dict[str, Path]:
        paths = {s: tsv_path(self.data_dir, s) for s in SPLIT_FILES}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise DataError(
                f"task=retrieval: missing {', '.join(missing)}; expected the LRA release layout "
                f"{self.data_dir}/tsv_data/new_aan_pairs.{{train,eval,test}}.tsv: unpack "
                "lra_release.gz (https://storage.googleapis.com/long-range-arena/lra_release.gz) "
                "and point data_dir at the lra_release folder"
            )
        return paths

    def _build(self, tmp: Path, files: dict[str, Path]) -> tuple[dict, dict]:
        """Stream both documents of every pair into ``tmp/data.npy``; the offsets, labels
        and split indices and the metadata are returned for the cache."""
        log.info("retrieval: streaming %s into the cache", self.data_dir / "tsv_data")
        docs, labels, counts = ByteWriter(tmp, self.max_len), [], {}
        for split, f in files.items():
            n0 = len(labels)
            for _, y, t1, t2 in stream_rows(f, self.doc_bytes):
                docs.add(t1)
                docs.add(t2)
                labels.append(y)
            counts[split] = len(labels) - n0
            if counts[split] == 0:
                raise DataError(f"{f}: no rows; restore the file from lra_release.gz")
        offsets = docs.close()
        ends = np.cumsum([counts[s] for s in files])
        idx = {s: np.arange(e - counts[s], e) for s, e in zip(files, ends)}
        arrays = {
            "offsets": offsets,
            "labels": np.asarray(labels, np.uint8),
            **split_indices(idx["train"], idx["val"], idx["test"]),
        }
        return arrays, {"counts": counts, "truncated_docs": docs.truncated}

    def splits(self) -> Splits:
        files = self.files()
        key = {
            "format": CACHE_FORMAT,
            "source": file_signature(files.values()),
            "max_len": self.max_len,
            "doc_bytes": self.doc_bytes,
        }
        names = ["data", "offsets", "labels", *SPLIT_INDICES]
        cache = load_or_build(self, self.name, key, names, lambda tmp: self._build(tmp, files))
        a, meta = cache.arrays, cache.meta
        self.cache_path = cache.path
        self.info = {"counts": meta["counts"], "truncated_docs": meta["truncated_docs"]}
        for s, n in meta["counts"].items():
            if n != EXPECTED_ROWS[s]:
                log.warning(
                    "retrieval: %s has %d rows, the LRA release has %d", s, n, EXPECTED_ROWS[s]
                )
        base = BytePairDataset(a["data"], a["offsets"], a["labels"])
        return Splits.from_indices(base, a, make_collate("tokens", dual=True))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "encoding": f"bytes: first {self.doc_bytes} bytes, id = byte + 1, 0 = pad",
            "source": str(self.data_dir / "tsv_data"),
            **self.info,
        }
