"""surnn.harness.preemption.StopSignals: a stop signal is noted and cuts an interruptible
section short, in the process that installed the handler only."""

from __future__ import annotations

import os
import signal

import pytest

from surnn.harness import preemption
from surnn.harness.preemption import Preempted, StopSignals


def test_a_signal_is_noted_and_interrupts_only_where_allowed():
    seen = []
    stop = StopSignals(interrupts=True, on_first=seen.append)
    stop.interruptible = True
    with pytest.raises(Preempted):
        stop._handle(signal.SIGTERM, None)
    assert stop.signum == signal.SIGTERM and seen == [signal.SIGTERM]
    assert not stop.interruptible  # one interruption per section
    stop._handle(signal.SIGUSR1, None)  # outside a section: noted only
    assert stop.signum == signal.SIGUSR1 and seen == [signal.SIGTERM]
    with pytest.raises(Preempted):
        stop.check()


def test_a_forked_child_ignores_the_inherited_handler(monkeypatch):
    """A loader worker inherits the handler at fork and runs it if the job's signal comes
    before its worker_init ignores the signals: there it must neither note nor raise
    (raising killed the worker and could hang the main process in the loader)."""
    seen = []
    stop = StopSignals(interrupts=True, on_first=seen.append)
    stop.interruptible = True
    child = os.getpid() + 1
    monkeypatch.setattr(preemption.os, "getpid", lambda: child)  # as in a forked child
    stop._handle(signal.SIGTERM, None)
    assert stop.signum is None and seen == [] and stop.interruptible
