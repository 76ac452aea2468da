"""Progress of a sweep run through submitit (SLURM or local jobs).

Hydra's submitit launcher submits every job, then waits for the results in job order and
prints nothing until the last one is back: a sweep of hours looked hung. With
``report_sweep_progress()`` (run.py calls it), the launcher prints one line per job as it
ends (done / failed, its overrides, its best validation accuracy and folder) and a count
of those still running. The jobs themselves are unchanged.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence

log = logging.getLogger("sweep")


def wait_reporting(
    jobs: Sequence, job_overrides: Sequence[Sequence[str]], first: int, poll_s: float = 2.0
) -> None:
    """Block until every job has ended, logging each as it ends."""
    from hydra.core.utils import filter_overrides

    n = len(jobs)
    pending = dict(enumerate(jobs))
    log.info("sweep: %d job(s) submitted; a line per job follows as each one ends", n)
    ended = 0
    while pending:
        for i, job in list(pending.items()):
            if not job.done():
                continue
            del pending[i]
            ended += 1
            label = " ".join(filter_overrides(job_overrides[i]))
            try:
                ret = job.results()[0]
                value = ret.return_value
                folder = getattr(ret, "working_dir", None) or "?"
                what = f"done, best val acc {value:.4f}" if isinstance(value, float) else "done"
                log.info(
                    "sweep job %d/%d (#%d %s): %s -> %s", ended, n, first + i, label, what, folder
                )
            except Exception as e:  # noqa: BLE001 - reported here, raised again by Hydra
                msg = str(e).strip().splitlines()
                log.error(
                    "sweep job %d/%d (#%d %s): FAILED (%s); its log: %s",
                    ended,
                    n,
                    first + i,
                    label,
                    msg[-1][:200] if msg else type(e).__name__,
                    getattr(getattr(job, "paths", None), "stderr", "?"),
                )
            if pending:
                log.info("sweep: %d of %d job(s) still running", len(pending), n)
        if pending:
            time.sleep(poll_s)


def report_sweep_progress() -> bool:
    """Make Hydra's submitit launchers report each job as it ends; False when the
    launcher plugin is not installed."""
    try:
        import submitit
        from hydra_plugins.hydra_submitit_launcher import submitit_launcher as sl
    except ImportError:
        return False
    base = sl.BaseSubmititLauncher
    if getattr(base.launch, "_reports_progress", False):
        return True
    original = base.launch

    @functools.wraps(original)
    def launch(self, job_overrides, initial_job_idx):
        orig_map = submitit.AutoExecutor.map_array

        def map_array(executor, fn, *iterables):
            jobs = orig_map(executor, fn, *iterables)
            wait_reporting(jobs, job_overrides, initial_job_idx)
            return jobs

        submitit.AutoExecutor.map_array = map_array
        try:
            return original(self, job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = orig_map

    launch._reports_progress = True
    base.launch = launch
    return True
