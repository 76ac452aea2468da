"""surnn.harness.preemption.StopSignals: a stop signal is noted and cuts an interruptible
section short, in the process that installed the handler only."""

from __future__ import annotations

import multiprocessing
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


class _SignalsMidFetch:
    """An iterator that receives a stop signal while producing its second item (as a
    DataLoader forking its workers does, under ``kill -- -PGID``), and records whether it
    got to finish that item."""

    def __init__(self, n: int = 3):
        self.i, self.n, self.finished = 0, n, []

    def __iter__(self):
        return self

    def __next__(self):
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        if self.i == 2:
            signal.raise_signal(signal.SIGUSR1)  # the handler runs here, synchronously
        self.finished.append(self.i)
        return self.i


@pytest.fixture
def installed():
    """A StopSignals with its handlers installed; the previous handlers put back after."""
    stop = StopSignals(interrupts=True, on_first=lambda signum: None)
    before = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
    stop.install()
    yield stop
    for s, h in before.items():
        signal.signal(s, h)


def test_a_signal_during_a_fetch_is_acted_on_once_the_batch_is_in_hand(installed):
    """Regression (CI, kill -- -PGID while an evaluation's loader forked its workers): a
    Preempted raised inside the loader was swallowed by fork's after-fork hooks with
    logging's lock held, and the run hung. Inside ``fetch`` the signal is only noted; the
    fetch completes, then the section is cut short."""
    stop, it = installed, _SignalsMidFetch()
    stop.interruptible = True
    assert stop.fetch(it) == 1 and stop.interruptible
    with pytest.raises(Preempted):
        stop.fetch(it)
    assert it.finished == [1, 2]  # the fetch was not cut short
    assert stop.signum == signal.SIGUSR1 and not stop.interruptible


def test_a_fetch_outside_a_section_only_notes_the_signal(installed):
    stop, it = installed, _SignalsMidFetch()
    assert [stop.fetch(it) for _ in range(4)] == [1, 2, 3, None]  # None: the end
    assert stop.signum == signal.SIGUSR1 and not stop.interruptible


def _mask() -> set:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))  # the mask, unchanged


class _ForksAChild:
    """An iterator whose item is the signal mask a process forked inside ``next`` starts
    with (as a DataLoader's worker is forked inside the first fetch)."""

    def __init__(self):
        self.ctx = multiprocessing.get_context("fork")
        self.q = self.ctx.SimpleQueue()

    def __iter__(self):
        return self

    def __next__(self):
        p = self.ctx.Process(target=lambda: self.q.put(_mask()))
        p.start()
        p.join(timeout=60)
        return self.q.get()


def test_a_process_forked_during_a_fetch_starts_with_the_stop_signals_blocked(installed):
    """torch's worker SIGTERM handler kills a worker on any SIGTERM its parent did not
    send, from the worker's start until its worker_init ignores the signal: a group
    signal in that window crashed the run ("DataLoader worker ... killed by signal:
    Terminated", one run in ~10 under kill -- -PGID). Forked with the signals blocked, a
    worker holds them pending until it ignores them."""
    installed.interruptible = True
    child = installed.fetch(_ForksAChild())
    assert set(preemption.STOP_SIGNALS) <= child
    assert not set(preemption.STOP_SIGNALS) & _mask()  # unblocked here again


def test_a_loader_worker_ignores_and_unblocks_the_stop_signals(installed):
    """A worker forked in a fetch (signals blocked) ends its worker_init ignoring the stop
    signals, with nothing blocked: a signal pending since its fork is discarded."""
    import torch

    from surnn.harness.data import _worker_init

    class Report(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            ignored = all(signal.getsignal(s) == signal.SIG_IGN for s in preemption.STOP_SIGNALS)
            return torch.tensor([ignored, bool(set(preemption.STOP_SIGNALS) & _mask())])

    loader = torch.utils.data.DataLoader(
        Report(), num_workers=1, worker_init_fn=_worker_init, multiprocessing_context="fork"
    )

    def batches():  # the workers start inside the fetch, as in the trainer
        yield from loader

    ignored, blocked = installed.fetch(batches())[0].tolist()
    assert ignored and not blocked


def test_uninstall_puts_back_the_handlers_of_before():
    """After a run (harness.run.fit), the process's handlers are those it had: a later
    Ctrl-C in a notebook or a test session acts as it did before the run."""
    outer = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
    # SIGINT as in a terminal (a suite run in the background starts with it ignored, and
    # an ignored SIGINT is left alone: tested below)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
        stop = StopSignals(interrupts=True, on_first=lambda signum: None)
        stop.install()
        assert all(signal.getsignal(s) == stop._handle for s in preemption.STOP_SIGNALS)
        stop.uninstall()
        assert {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS} == before
    finally:
        for s, h in outer.items():
            signal.signal(s, h)


LIVE_LOADER_AT_EXIT = """
import torch
from surnn.harness.data import _worker_init

class Nums(torch.utils.data.Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        return i

loader = torch.utils.data.DataLoader(
    Nums(), num_workers=2, worker_init_fn=_worker_init, multiprocessing_context="fork"
)
it = iter(loader)
next(it)  # the workers are up and have ignored SIGTERM
print("exiting", flush=True)
"""


def test_a_process_exits_with_its_loader_workers_alive():
    """A loader alive at the interpreter's exit (an exception raised during an evaluation
    keeps its iterator): multiprocessing's exit hook ends daemonic children with SIGTERM,
    which our workers ignore, then waits for them; without ``_end_workers_at_exit`` the
    process hung there (seen after Ctrl-C with a KeyboardInterrupt left to the top)."""
    import subprocess
    import sys

    from tests.fixtures import ROOT

    done = subprocess.run(
        [sys.executable, "-c", LIVE_LOADER_AT_EXIT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exiting" in done.stdout


def test_a_sigint_ignored_at_start_stays_ignored():
    """A process started ignoring SIGINT (a shell's background job) keeps ignoring it: only
    the other stop signals are handled."""
    before = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = StopSignals(interrupts=True, on_first=lambda signum: None)
    try:
        stop.install()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        stop.uninstall()
    finally:
        for s, h in before.items():
            signal.signal(s, h)
