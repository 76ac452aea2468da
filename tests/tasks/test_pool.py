"""tasks.pool.ordered_map: the process pool behind data generation and decoding.

The case guarded here: ListOps generation stops early (enough examples in the first
chunks) while tasks are still queued, where ``multiprocessing.Pool.terminate`` deadlocks
about one run in ten. Loops run in a subprocess with a timeout so a hang
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from surnn.errors import DataError
from tasks.pool import ordered_map

ROOT = Path(__file__).resolve().parents[2]


def _square(x: int) -> int:
    time.sleep(0.001 * (x % 3))  # uneven durations: results must still come in job order
    return x * x


def _die(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    return x


def test_results_in_job_order_in_process_and_in_workers():
    assert list(ordered_map(_square, range(40), workers=1)) == [i * i for i in range(40)]
    assert list(ordered_map(_square, range(40), workers=2, prefetch=3)) == [
        i * i for i in range(40)
    ]


def test_early_stop_on_endless_jobs_leaves_no_worker_behind():
    import itertools

    before = set(mp.active_children())  # other tests' processes are not ours to judge
    it = ordered_map(_square, itertools.count(), workers=2)
    assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
    it.close()
    assert set(mp.active_children()) <= before


def test_dead_worker_raises_a_clear_error_instead_of_hanging():
    before = set(mp.active_children())
    with pytest.raises(DataError, match="worker process died.*workers=1"):
        list(ordered_map(_die, range(10), workers=2))
    assert set(mp.active_children()) <= before


def _run_with_timeout(code: str, timeout: float) -> None:
    try:
        p = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout}s: a pool did not shut down")
    assert p.returncode == 0, p.stderr[-2000:]


def test_repeated_early_stops_never_hang():
    _run_with_timeout(
        """
        import itertools
        from tasks.pool import ordered_map
        from tests.tasks.test_pool import _square
        for _ in range(60):
            it = ordered_map(_square, itertools.count(), workers=2)
            next(it)
            it.close()
        """,
        timeout=120,
    )


def test_tiny_listops_generation_with_workers_never_hangs():
    """The exact CI failure: a spec met by the first chunk, generated with 2 workers."""
    _run_with_timeout(
        """
        from tasks.generators.listops import ListOpsSpec, generate
        spec = ListOpsSpec(n_train=64, n_val=20, n_test=21, min_length=10, max_length=60,
                           max_depth=3)
        first = None
        for _ in range(25):
            d = generate(spec, workers=2, progress=False)
            first = first or d.sources
            assert d.sources == first
        """,
        timeout=150,
    )
