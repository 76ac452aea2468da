"""A preemption at a chosen step, for the stub-SLURM tests (on PYTHONPATH of the jobs only).

With ``SURNN_TEST_PREEMPT_AT_STEP=K`` and before any requeue (no ``SLURM_RESTART_COUNT``),
rank 0 of the job asks SLURM to signal the job (``scancel --signal=USR2 <job>``, what
SLURM does before a preemption or the time limit) right after step K, and waits until its
own handler has noted the signal. The run then stops at a step every rank agrees on,
whatever the speed of a step: the test depends on no timing. Nothing is imported until
``surnn.harness.trainer`` is.
"""

from __future__ import annotations

import os
import sys

_STEP = os.environ.get("SURNN_TEST_PREEMPT_AT_STEP")


def _patch(module) -> None:
    import subprocess
    import time

    train_step = module.Trainer._train_step
    step = int(_STEP)

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


if _STEP and not os.environ.get("SLURM_RESTART_COUNT"):
    import importlib.abc
    import importlib.util

    class _PatchTrainer(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "surnn.harness.trainer":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _PatchTrainer())
