"""Memory-mapped array caches: one protocol for every task that prepares its data once.

A cache is a folder ``<data_dir>/cache/<name>/<key>/`` of ``.npy`` arrays and a
``meta.json``; the key hashes every option that changes the arrays (``cache_key``: the
source files' identity, the encoding options, a format number), so two settings never
share a folder. ``load_or_build`` is the one way in:

1. **read** -- a complete cache is memory-mapped without a lock and without writing a
   byte, so a cache on a read-only file system (a cluster's shared data folder) serves
   every run;
2. **check** -- ``meta.json`` must parse, name this folder's key and record each array's
   dtype, shape, size in bytes and ``sample_digest``; an array whose size, header or
   digest differs is a one-line DataError before any training;
3. **build** -- a missing cache, or one written under an older protocol, is built under an
   exclusive lock (concurrent runs and DDP ranks build it once) into a temporary folder
   renamed into place, so no reader ever sees half a cache. When the data folder cannot
   be written, a one-line DataError names the missing cache and the command that builds it
   where it can be.

``writing`` is the same guard for other writes into a data folder (generated ListOps and
Pathfinder files).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from surnn.errors import DataError
from surnn.utils import file_lock
from tasks.base import Task

log = logging.getLogger(__name__)

#: the layout of meta.json; a cache written under another number is rebuilt
PROTOCOL = 2
#: the errors of a write the file system refuses (read-only, permissions, space)
WRITE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}

# sample_digest: files up to WHOLE_FILE bytes are hashed whole; larger ones in SAMPLES
# blocks of BLOCK bytes spread evenly from the first byte to the last
WHOLE_FILE = 16 << 20
BLOCK = 64 << 10
SAMPLES = 64


# ----------------------------------------------------------------------------- keys


def cache_key(options: dict[str, Any]) -> str:
    """Stable short hash of every option that changes the cached arrays."""
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def cache_dir(data_dir: str | os.PathLike, name: str, options: dict[str, Any]) -> Path:
    return Path(data_dir).expanduser() / "cache" / name / cache_key(options)


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


def sample_digest(path: Path) -> str:
    """A digest of a cache file that costs at most 16 MiB of reading whatever its size.

    Files up to 16 MiB (offsets, labels, split indices: the arrays that index the data) are
    hashed whole, so any change to them is caught. Larger files (the token and pixel data
    of multi-GB caches) hash their size and 64 blocks of 64 KiB spread evenly from the first
    byte to the last: a truncated or extended file, a new header, or a file rewritten with
    other contents is caught; a change confined to the unsampled bytes of a large file is
    not."""
    size = os.path.getsize(path)
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        if size <= WHOLE_FILE:
            while block := f.read(1 << 20):
                h.update(block)
        else:
            for k in range(SAMPLES):
                f.seek(k * (size - BLOCK) // (SAMPLES - 1))
                h.update(f.read(BLOCK))
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing


def unwritable(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` (or, when it does not exist yet, in its
    nearest existing parent); None when they can."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def _under(filename: Any, root: Path) -> bool:
    if not isinstance(filename, str | bytes | os.PathLike):
        return False
    f, r = os.path.abspath(os.fsdecode(filename)), os.path.abspath(root)
    return f == r or f.startswith(r.rstrip(os.sep) + os.sep)


def build_command(task: Task) -> str:
    """The command that prepares ``task``'s data and cache in its data folder."""
    return (
        f"python scripts/prepare_data.py --data-dir {task.data_dir} --build-cache "
        f"--tasks {task.name}, adding this run's task overrides (experiment=..., "
        "task.options.*=...)"
    )


@contextlib.contextmanager
def writing(task: Task, target: Path, lock: str, missing: str, fix: str) -> Iterator[None]:
    """Hold the lock named ``lock`` while ``target`` (a cache folder or generated data) is
    written. A data folder that cannot be written is a one-line DataError: ``missing`` (what
    is not there), why it cannot be made, and ``fix``."""
    root = task.data_dir / "cache"
    reason = unwritable(target) or unwritable(root)
    if reason is not None:
        raise DataError(f"task={task.name}: {missing}, and {reason}; {fix}")
    try:
        with file_lock(root / ".locks" / f"{lock}.lock"):
            yield
    except OSError as e:
        if e.errno not in WRITE_ERRNOS or not (
            _under(e.filename, target) or _under(e.filename, root)
        ):
            raise
        raise DataError(
            f"task={task.name}: {missing}, and writing {e.filename} failed ({e.strerror}); {fix}"
        ) from None


# ----------------------------------------------------------------------------- the protocol


@dataclass
class Cache:
    """A checked cache: its folder, every array (memory-mapped) and the task's metadata."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


class _Stale(Exception):
    """Written under an older protocol: rebuilt."""


class _Corrupt(Exception):
    """Not what was written: a DataError, never silently replaced."""


def _record(file: Path) -> dict[str, Any]:
    a = np.load(file, mmap_mode="r")
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "bytes": file.stat().st_size,
        "digest": sample_digest(file),
    }


def _read(path: Path, names: Sequence[str]) -> Cache | None:
    """The checked cache at ``path``; None when absent; _Stale or _Corrupt otherwise."""
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        record = json.loads(meta_file.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise _Corrupt(f"meta.json is not valid JSON ({e})") from None
    except OSError as e:
        raise _Corrupt(f"meta.json cannot be read ({e.strerror})") from None
    if not isinstance(record, dict):
        raise _Corrupt("meta.json is not a JSON object")
    if record.get("protocol") != PROTOCOL:
        raise _Stale(f"written under cache protocol {record.get('protocol', 1)}")
    try:
        if cache_key(record["key"]) != path.name:
            raise _Corrupt(f"meta.json records the key of the cache {cache_key(record['key'])}")
        files = record["arrays"]
        lacking = [n for n in names if n not in files]
        if lacking:
            raise _Corrupt(f"meta.json lists no array {', '.join(lacking)}")
        arrays = {}
        for name, want in files.items():
            f = path / f"{name}.npy"
            if not f.is_file():
                raise _Corrupt(f"{f.name} is missing")
            size = f.stat().st_size
            if size != want["bytes"]:
                raise _Corrupt(f"{f.name} has {size:,} bytes, {want['bytes']:,} were written")
            if sample_digest(f) != want["digest"]:
                raise _Corrupt(f"the bytes of {f.name} differ from those written (digest)")
            try:
                a = np.load(f, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise _Corrupt(f"{f.name}: {e}") from None
            if a.dtype.str != want["dtype"] or list(a.shape) != want["shape"]:
                raise _Corrupt(f"{f.name} holds {a.dtype.str} {list(a.shape)}, not {want}")
            arrays[name] = a
        return Cache(path, arrays, record["meta"])
    except (KeyError, TypeError, AttributeError) as e:
        raise _Corrupt(f"meta.json lacks or garbles {e}") from None


def _build(
    path: Path,
    key: dict[str, Any],
    names: Sequence[str],
    build: Callable[[Path], tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> None:
    """``build(tmp)`` writes arrays into the folder ``tmp`` (streamed .npy files) and
    returns more arrays to save there and the task's metadata; the folder then replaces
    ``path`` by renames (a reader sees the old cache, none, or the new one)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        arrays, meta = build(tmp)
        for name, a in arrays.items():
            np.save(tmp / f"{name}.npy", a)
        files = {f.stem: _record(f) for f in sorted(tmp.glob("*.npy"))}
        lacking = [n for n in names if n not in files]
        if lacking:  # pragma: no cover - a task's builder and its names disagree
            raise RuntimeError(f"{path}: the builder wrote no {', '.join(lacking)}")
        record = {
            "protocol": PROTOCOL,
            "key": json.loads(json.dumps(key, sort_keys=True, default=str)),
            "arrays": files,
            "meta": meta,
        }
        (tmp / "meta.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        old = path.with_name(f"{path.name}.old{os.getpid()}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_or_build(
    task: Task,
    name: str,
    key: dict[str, Any],
    names: Sequence[str],
    build: Callable[[Path], tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> Cache:
    """The cache of ``task``'s arrays for ``key`` under ``<data_dir>/cache/<name>/``,
    checked, built first when it is missing (see the module docstring). ``names``: the
    arrays the task reads; ``build``: as in ``_build``."""
    path = cache_dir(task.data_dir, name, key)
    fix = f"build it where it can be written: {build_command(task)}"

    def attempt() -> Cache | str:
        """The cache, or what is missing (absent or out of date); DataError if corrupt."""
        try:
            got = _read(path, names)
        except _Stale as e:
            return f"the cache {path} is out of date ({e})"
        except _Corrupt as e:
            how = "delete that folder and rerun to rebuild it"
            if unwritable(path.parent) is not None:
                how = f"re{fix}"
            raise DataError(f"task={task.name}: the cache {path} is corrupt: {e}; {how}") from None
        return f"the cache {path} is not built" if got is None else got

    try:
        got = attempt()
    except DataError:
        if unwritable(path.parent) is not None:
            raise
        got = f"the cache {path} is being replaced"  # by another process: look again locked
    if isinstance(got, Cache):
        log.info("%s: cache hit %s", task.name, path)
        return got
    with writing(task, path, f"{name}-{path.name}", got, fix):
        got = attempt()
        if isinstance(got, str):
            log.info("%s: %s; building it", task.name, got)
            _build(path, key, names, build)
            got = attempt()
            assert isinstance(got, Cache), got
    return got
