"""Stop signals (SIGTERM, SIGUSR1, SIGUSR2: SLURM preemption, scancel, timeout; SIGINT:
Ctrl-C).

A signal is noted at once; on one process, inside an interruptible section (a training
step's forward and backward, an evaluation) it also cuts the section short by raising
``Preempted``, since a step of the main job on CPU takes ~16 s and waiting for its end let
SLURM's grace period run out. Under DDP the ranks must stop together: the trainer reduces
a stop flag with each step's numbers, and every rank abandons the same step when any rank
has a signal. The trainer then saves ``last.pt`` and ``hand_on`` gives the signal to the
handler installed before (the default action, or e.g. submitit's requeue handler).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from surnn.harness.data import STOP_SIGNALS


def _block(signals) -> frozenset:
    """Block ``signals`` in this thread (where the platform can); the ones it blocks."""
    if not hasattr(signal, "pthread_sigmask"):
        return frozenset()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    return frozenset(signals) - before


def _unblock(signals) -> None:
    if signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


class Preempted(Exception):
    """Raised inside a step or an evaluation when a stop signal arrives, to save and exit
    quickly."""


class StopSignals:
    """The stop signals of one trainer. ``interrupts``: whether a signal may cut an
    interruptible section short (one process only: under DDP every rank must finish the
    step's collectives); ``on_first(signum)`` is called at the first signal."""

    def __init__(self, interrupts: bool, on_first: Callable[[int], None]):
        self.interrupts, self.on_first = interrupts, on_first
        self.signum: int | None = None
        self.interruptible = False
        self._prev: dict[int, Any] = {}
        self._pid = os.getpid()

    def install(self) -> None:
        """Handle the stop signals from now on (remembering the handlers they had). A
        SIGINT this process was started ignoring stays ignored: a job a shell started in
        the background (``cmd &``) is meant to be immune to Ctrl-C."""
        self._prev, self._pid = {}, os.getpid()
        for s in STOP_SIGNALS:
            if s == signal.SIGINT and signal.getsignal(s) == signal.SIG_IGN:
                continue
            with contextlib.suppress(ValueError):  # not the main thread
                self._prev[s] = signal.signal(s, self._handle)

    def uninstall(self) -> None:
        """Put back the handlers ``install`` replaced (in this process)."""
        if os.getpid() != self._pid:
            return
        for s, prev in self._prev.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread; None
                signal.signal(s, prev)
        self._prev = {}

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            # A forked child (a loader worker between its fork and its worker_init, which
            # then ignores these signals) inherits this handler: it must not act on it.
            # Raising Preempted there would kill the worker with a traceback and can hang
            # the main process in the loader's shutdown (seen under `kill -- -PGID` while
            # an evaluation's workers were starting).
            return
        first = self.signum is None
        self.signum = signum
        if first:
            self.on_first(signum)
        if self.interruptible and self.interrupts:
            self.interruptible = False
            raise Preempted

    def fetch(self, it: Iterator[Any]) -> Any:
        """``next(it)`` (``None`` at its end), never cut short: a fetch may start the
        loader's workers (``os.fork``), and a signal must neither unwind through that nor
        reach a worker before it ignores the signals. So, during the fetch:

        - the section is closed to interruption: a ``Preempted`` raised inside fork's
          after-fork hooks is swallowed there, with logging's lock held, and the process
          hangs at its next log line;
        - this thread blocks the stop signals, so a worker forked now starts with them
          blocked: from its start torch's worker SIGTERM handler kills it on any SIGTERM
          not sent by its parent (the main process then dies with "DataLoader worker ...
          killed by signal: Terminated" before saving), until ``_worker_init`` ignores
          them and unblocks.

        A signal that arrives meanwhile is noted (delivered at the unblock at the latest),
        and acted on as soon as the batch is in hand."""
        was, self.interruptible = self.interruptible, False
        blocked = _block(STOP_SIGNALS)
        try:
            item = next(it, None)
        finally:
            _unblock(blocked)  # a pending signal is handled here: noted, not raised
        if was:
            self.check()
            self.interruptible = True
        return item

    def check(self) -> None:
        """Raise ``Preempted`` if a stop signal has arrived (one process only: under DDP
        the ranks stop together, at a step they agree on, never alone in an evaluation
        whose totals every rank must reduce)."""
        if self.interrupts and self.signum is not None:
            raise Preempted

    def hand_on(self) -> NoReturn:
        """Give the signal to the handler installed before, then exit (Ctrl-C: Python's
        own handler raises KeyboardInterrupt, which run.py turns into the process's end by
        SIGINT, without a traceback; a caller in Python gets the KeyboardInterrupt)."""
        signum = self.signum
        prev = self._prev.get(signum)
        signal.signal(signum, signal.SIG_DFL if prev is None else prev)
        signal.raise_signal(signum)
        raise SystemExit(128 + signum)
