"""The worker processes of data preparation (ListOps and Pathfinder generation, PNG
decoding): results in job order, bounded memory, and workers that stop on a signal."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from surnn.errors import DataError


def default_signals() -> None:
    """Pool initializer: default SIGTERM/SIGINT handling in worker processes.

    Forked workers inherit the parent's handlers; under submitit (SLURM sweeps) SIGTERM is
    ignored there, so the workers could never be stopped and data preparation hung.
    """
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
