"""The Task interface, the padded batch format and memory-mapped sequence caches.

A batch is a dict:
  ``x``: LongTensor [B, L] (token ids, 0 = padding) or FloatTensor [B, L, C] (values),
  ``lengths``: LongTensor [B] (valid positions; padding is never inferred from values),
  ``y``: LongTensor [B];
  dual tasks (Retrieval) add ``x2`` and ``lengths2``.
Caches live under ``<data_dir>/cache/<task>/<key>/`` where the key hashes every option
that changes the arrays, so two settings never share a cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from surnn.errors import ConfigError, DataError


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    collate: Callable[[list], dict[str, torch.Tensor]]


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


# ----------------------------------------------------------------------------- datasets


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


# ----------------------------------------------------------------------------- collate


def _pad(seqs: Sequence[np.ndarray], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    L = int(lengths.max()) if len(seqs) else 0
    tail = tuple(np.asarray(seqs[0]).shape[1:]) if len(seqs) else ()
    out = torch.zeros((len(seqs), L, *tail), dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.from_numpy(
            np.asarray(s).astype(np.int64 if dtype == torch.long else np.float32)
        )
    return out, lengths


def make_collate(
    input_kind: Literal["tokens", "values"],
    dual: bool = False,
    value_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[list], dict[str, torch.Tensor]]:
    """Right-pad a list of ``(seq, label)`` (or ``(seq1, seq2, label)``) into a batch.

    Tokens become LongTensor [B, L]; values become FloatTensor [B, L, C] (a 1-D sequence
    gets C = 1) after ``value_transform`` (e.g. uint8 pixels -> normalised scalars).
    """
    dtype = torch.long if input_kind == "tokens" else torch.float32

    def encode(seqs):
        x, lengths = _pad(seqs, dtype)
        if input_kind == "values":
            if x.dim() == 2:
                x = x.unsqueeze(-1)
            if value_transform is not None:
                x = value_transform(x)
        return x, lengths

    def collate(items: list) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        batch["x"], batch["lengths"] = encode([it[0] for it in items])
        if dual:
            batch["x2"], batch["lengths2"] = encode([it[1] for it in items])
        batch["y"] = torch.tensor([int(it[-1]) for it in items], dtype=torch.long)
        return batch

    return collate


# ----------------------------------------------------------------------------- caches


def cache_key(options: dict[str, Any]) -> str:
    """Stable short hash of every option that changes the cached arrays."""
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def cache_dir(data_dir: str | os.PathLike, task: str, options: dict[str, Any]) -> Path:
    return Path(data_dir).expanduser() / "cache" / task / cache_key(options)


def write_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays as .npy plus ``meta.json`` atomically (a temp folder renamed into
    place), so an interrupted preparation never leaves a half-written cache."""
    commit_cache(begin_cache(Path(path)), Path(path), arrays, meta)


class NpyStream:
    """Append-only 1-D .npy file of unknown final length: a fixed-size header is
    rewritten with the true shape on ``close``, so nothing is held in memory."""

    HEADER = 128

    def __init__(self, path: Path, dtype=np.uint8):
        self.path, self.dtype, self.n = Path(path), np.dtype(dtype), 0
        self.f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.f.write(b"\0" * self.HEADER)

    def write(self, arr: np.ndarray | bytes) -> None:
        buf = bytes(arr) if isinstance(arr, bytes | bytearray) else arr.astype(self.dtype).tobytes()
        self.f.write(buf)
        self.n += len(buf) // self.dtype.itemsize

    def close(self) -> None:
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        d["shape"] = (self.n,)
        body = repr(d).encode("latin1")
        pad = self.HEADER - 10 - len(body) - 1
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + (self.HEADER - 10).to_bytes(2, "little"))
        self.f.write(body + b" " * pad + b"\n")
        self.f.close()


def file_signature(paths: Iterable[Path]) -> list[list]:
    """Identity of source files (path, size, mtime) for cache keys: a changed file
    gives a new cache instead of stale arrays."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def files_digest(paths: Iterable[Path]) -> str:
    """One hash over (name, size, mtime) of many files (e.g. the 50,000 IMDB reviews):
    editing, adding or replacing any one of them gives a new cache key. A stat per file
    (about 0.3 s for IMDB), no reading."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so concurrent runs (or DDP ranks) build a cache once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def begin_cache(path: Path) -> Path:
    """A fresh temp folder next to ``path``; ``commit_cache`` renames it into place."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_cache(tmp: Path, path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    for k, v in arrays.items():
        np.save(tmp / f"{k}.npy", v)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def read_cache(path: Path, names: Sequence[str]) -> tuple[dict[str, np.ndarray], dict] | None:
    """Memory-map a cache written by ``write_cache``; None when absent or incomplete."""
    path = Path(path)
    if not (path / "meta.json").exists():
        return None
    try:
        arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in names}
    except (OSError, ValueError) as e:
        raise DataError(
            f"cache {path} is corrupt ({e}); delete that folder and rerun to rebuild it"
        ) from e
    return arrays, json.loads((path / "meta.json").read_text())


def pack_sequences(seqs: Sequence[np.ndarray], dtype=np.int16) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate variable-length sequences into (flat data, offsets)."""
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    data = (
        np.concatenate([np.asarray(s, dtype=dtype) for s in seqs]) if seqs else np.zeros(0, dtype)
    )
    return data, offsets


def check_max_len(value: Any, task: str, option: str = "max_len") -> int:
    """A positive integer length option, else a ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"task={task}: task.options.{option}={value!r}; expected a positive integer"
        )
    return value


def default_signals() -> None:
    """Pool initializer: default SIGTERM/SIGINT handling in worker processes.

    Forked workers inherit the parent's handlers; under submitit (SLURM sweeps) SIGTERM is
    ignored there, so the workers could never be stopped and data preparation hung.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ordered_map(
    fn: Callable[[Any], Any], jobs: Iterable, workers: int, prefetch: int | None = None
) -> Iterator:
    """Yield ``fn(job)`` for each job, in job order, computed by ``workers`` processes.

    ``jobs`` may be endless (it is read lazily) and at most ``prefetch`` (default
    2 x workers) results are in flight, so memory stays bounded. The consumer may stop at
    any time (``close()``, ``break``, an exception): jobs not started are cancelled, the
    running ones finish and every worker exits. multiprocessing.Pool is not used on
    purpose: ``Pool.terminate`` with queued tasks can deadlock (its task-handler thread
    blocks on the queue lock), which hung ListOps generation about one run in ten, and a
    worker killed by the OOM killer makes ``Pool`` wait forever; here it raises instead.
    ``fn`` must be a module-level function; workers are forked on Linux.
    """
    if workers <= 1:
        yield from map(fn, jobs)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    prefetch = max(1, prefetch or 2 * workers)
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=default_signals)
    try:
        it, pending = iter(jobs), deque()
        for job in it:
            pending.append(ex.submit(fn, job))
            if len(pending) >= prefetch:
                break
        while pending:
            try:
                result = pending.popleft().result()
            except BrokenProcessPool as e:
                raise DataError(
                    f"a data-preparation worker process died ({e}): killed by the "
                    "out-of-memory killer (rerun with fewer workers; the task option "
                    "workers=1 runs in-process) or by a signal sent to the whole job"
                ) from None
            for job in it:
                pending.append(ex.submit(fn, job))
                break
            yield result
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` by a fixed seed (indices are stored with the cache)."""
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([int(round(f * n)) for f in fractions[:-1]])
    return [np.sort(p) for p in np.split(perm, cuts)]
