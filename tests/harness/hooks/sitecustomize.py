"""Test hooks for run.py subprocesses (on the PYTHONPATH of those processes only), each off
unless its environment variable is set. Nothing is imported until the module a hook patches
is, so a process without the variables runs as a user's does.

- ``SURNN_TEST_PREEMPT_AT_STEP=K``, for the stub-SLURM tests: before any requeue (no
  ``SLURM_RESTART_COUNT``), rank 0 of the job asks SLURM to signal the job (``scancel
  --signal=USR2 <job>``, what SLURM does before a preemption or the time limit) right after
  step K, and waits until its own handler has noted the signal. The run then stops at a
  step every rank agrees on, whatever the speed of a step.
- ``SURNN_TEST_HOLD_LOCK=<folder>``: right after the process takes a run folder's lock
  (``RunLock.acquire``), it creates ``<folder>/held`` and waits until ``<folder>/release``
  exists (300 s at most, so a test that fails to release it cannot hang), then goes on. A
  test meets the run while it holds its lock, whatever the speed of either.

The tests that use them depend on no timing.
"""

from __future__ import annotations

import os
import sys
import time


def _after_import(name: str, patch) -> None:
    """Call ``patch(module)`` once module ``name`` has been executed on its first import."""
    import importlib.abc
    import importlib.util

    class _Patch(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Patch())


def _preempt_at(step: int):
    def patch(module) -> None:
        import subprocess

        train_step = module.Trainer._train_step

        def _train_step(self, it):
            out = train_step(self, it)
            if self.step == step and self.rank == 0:
                job = os.environ["SLURM_JOB_ID"]
                if "SLURM_ARRAY_JOB_ID" in os.environ:
                    job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
                subprocess.run(["scancel", "--signal=USR2", job], check=True)
                deadline = time.time() + 120
                while self.signals.signum is None and time.time() < deadline:
                    time.sleep(0.01)
            return out

        module.Trainer._train_step = _train_step

    return patch


def _hold_lock(folder: str):
    def patch(module) -> None:
        from pathlib import Path

        acquire = module.RunLock.acquire

        def _acquire(self):
            out = acquire(self)
            (Path(folder) / "held").touch()
            deadline = time.time() + 300
            while not (Path(folder) / "release").exists() and time.time() < deadline:
                time.sleep(0.02)
            return out

        module.RunLock.acquire = _acquire

    return patch


if os.environ.get("SURNN_TEST_PREEMPT_AT_STEP") and not os.environ.get("SLURM_RESTART_COUNT"):
    _after_import(
        "surnn.harness.trainer", _preempt_at(int(os.environ["SURNN_TEST_PREEMPT_AT_STEP"]))
    )
if os.environ.get("SURNN_TEST_HOLD_LOCK"):
    _after_import("surnn.harness.lock", _hold_lock(os.environ["SURNN_TEST_HOLD_LOCK"]))
