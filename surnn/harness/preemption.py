"""Stop signals (SIGTERM, SIGUSR1, SIGUSR2: SLURM preemption, scancel, timeout).

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

from surnn.harness.data import PREEMPTION_SIGNALS


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
        """Handle the stop signals from now on (remembering the handlers they had)."""
        self._prev, self._pid = {}, os.getpid()
        for s in PREEMPTION_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread
                self._prev[s] = signal.signal(s, self._handle)

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
        """``next(it)`` (``None`` at its end) with the section closed to interruption while
        fetching: a fetch may start the loader's workers (``os.fork``), and a ``Preempted``
        raised inside fork's after-fork hooks is swallowed there and leaves logging's lock
        held, so the process hangs at its next log line (seen under ``kill -- -PGID`` as an
        evaluation's workers started). A signal arriving meanwhile is noted, and acted on
        as soon as the batch is in hand."""
        was, self.interruptible = self.interruptible, False
        item = next(it, None)
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
        """Give the signal to the handler installed before, then exit."""
        signum = self.signum
        signal.signal(signum, self._prev.get(signum, signal.SIG_DFL))
        signal.raise_signal(signum)
        raise SystemExit(128 + signum)
