"""One live process per run folder.

``RunLock`` holds an exclusive ``flock`` on ``<run_dir>/.lock`` for the life of the run and
writes the holder (pid, host, start time) into it. A second process started with the same
run_id finds the lock taken and stops at once with one line naming the holder; without
it both would train into one folder (duplicate steps in metrics.jsonl, a crash renaming
last.pt.tmp). The kernel drops the lock when its process dies, even by ``kill -9``, so a
lock left by a killed run is stale by construction and the next run takes it over (and
says whose it was).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from surnn.errors import ConfigError
from surnn.provenance import now_iso

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._f = None
        self.previous: dict | None = None  # the holder found in a stale lock file

    @property
    def held(self) -> bool:
        return self._f is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise ConfigError naming the live holder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(self.path)
            f.close()
            who = (
                f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (started "
                f"{holder.get('started', '?')})"
                if holder
                else "another process"
            )
            raise ConfigError(
                f"run folder {self.run_dir} is in use by {who}: two runs must not share a "
                "run_id; wait for that run to end (it resumes from there), or choose another "
                "run_id"
            ) from None
        self.previous = _read(self.path) or None
        if self.previous and self.previous.get("pid") != os.getpid():
            log.info(
                "%s: taking over the lock of a run that is no longer alive (pid %s on %s)",
                self.run_dir,
                self.previous.get("pid"),
                self.previous.get("host"),
            )
        f.seek(0)
        f.truncate()
        f.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": now_iso(),
                }
            )
            + "\n"
        )
        f.flush()
        self._f = f
        return self

    def release(self, remove: bool = False) -> None:
        """Drop the lock; ``remove`` also deletes the file (a run that never started).
        The holder's line is cleared first, so only a process that died holding the lock
        leaves one for the next run to report."""
        if self._f is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        else:
            with contextlib.suppress(OSError):
                self._f.seek(0)
                self._f.truncate()
                self._f.flush()
        with contextlib.suppress(OSError):
            fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()
        self._f = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
