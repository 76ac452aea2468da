"""What a sweep says while it runs and when it ends (Hydra multirun: ``python run.py -m``).

Hydra's submitit launcher submits every job, then waits for the results in job order and
prints nothing until the last one is back: a sweep of hours looked hung, and one failed
job ended it in a 40-line ``UncompletedJobError`` traceback. With
``report_sweep_progress()`` (run.py calls it) the launcher prints one line per job as it
ends (done / FAILED, its overrides, its best validation metric and its run folder) and a
count of those still running; every job runs to its end whatever the others do, and the
sweep then ends with one line per failed job naming its log (exit status 1). Hydra's
basic launcher (jobs one after another in this process) ends the same way. The jobs
themselves are unchanged.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("sweep")


def _one_line(text: str) -> str:
    """The most telling line of an error: its last non-empty one (a traceback's
    exception, or the ``error: ...`` line a job printed), without decoration."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip().strip("-")]
    return lines[-1][:300] if lines else "no message"


def job_outcome(ret) -> tuple[bool, str, str | None]:
    """(done, what, run folder) of a Hydra JobReturn: ``what`` is the best validation
    metric, or the error of a failed job in one line."""
    from hydra.core.utils import JobStatus

    folder = None
    hydra_cfg = getattr(ret, "hydra_cfg", None)
    if hydra_cfg is not None:
        folder = str(hydra_cfg.hydra.runtime.output_dir)
    if ret.status != JobStatus.COMPLETED:
        err = ret._return_value  # .return_value would raise it and print to stderr
        return False, _one_line(f"{type(err).__name__}: {err}"), folder
    value = ret.return_value
    return True, (f"best val {value:.4f}" if isinstance(value, float) else "done"), folder


def labels(job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Each job's overrides as a label: those that differ between the jobs (all of them
    when there is one job)."""
    from hydra.core.utils import filter_overrides

    jobs = [filter_overrides(list(o)) for o in job_overrides]
    shared = set.intersection(*(set(j) for j in jobs)) if len(jobs) > 1 else set()
    return [" ".join(o for o in j if o not in shared) for j in jobs]


def finish(failures: list[str], n: int) -> None:
    """End the sweep: nothing when every job succeeded, else one line per failed job and
    exit status 1 (the jobs that succeeded have their results.json)."""
    if not failures:
        log.info("sweep: all %d job(s) done", n)
        return
    print(f"error: {len(failures)} of {n} sweep job(s) failed:", file=sys.stderr)
    for line in failures:
        print(f"  {line}", file=sys.stderr)
    sys.exit(1)


def wait_reporting(
    jobs: Sequence, job_overrides: Sequence[Sequence[str]], first: int, poll_s: float = 2.0
) -> list[str]:
    """Block until every submitit job has ended, logging each as it ends; returns one
    line per failed job (its number, overrides, error and log file)."""
    n = len(jobs)
    pending = dict(enumerate(jobs))
    log.info("sweep: %d job(s) submitted; a line per job follows as each one ends", n)
    ended, failures, names = 0, [], labels(job_overrides)
    while pending:
        for i, job in list(pending.items()):
            if not job.done():
                continue
            del pending[i]
            ended += 1
            label = names[i]
            err_log = getattr(getattr(job, "paths", None), "stderr", "?")
            try:
                ok, what, folder = job_outcome(job.results()[0])
            except Exception as e:  # noqa: BLE001 - a job that died without returning
                ok, what, folder = False, _one_line(str(e)), None
            if ok:
                log.info(
                    "sweep job %d/%d (#%d %s): %s -> %s", ended, n, first + i, label, what, folder
                )
            else:
                where = f"{folder}; " if folder else ""
                line = f"sweep job #{first + i} ({label}): FAILED: {what} ({where}log: {err_log})"
                failures.append(line)
                log.error("sweep job %d/%d: %s", ended, n, line)
            if pending:
                log.info("sweep: %d of %d job(s) still running", len(pending), n)
        if pending:
            time.sleep(poll_s)
    return failures


def report_returns(rets: Sequence[Any], job_overrides: Sequence[Sequence[str]], first: int) -> None:
    """The basic launcher's jobs (run in this process, each caught by Hydra): a line per
    job, then ``finish``."""
    failures, names = [], labels(job_overrides)
    for i, ret in enumerate(rets):
        ok, what, folder = job_outcome(ret)
        label = names[i]
        if ok:
            job = f"{i + 1}/{len(rets)} (#{first + i} {label})"
            log.info("sweep job %s: %s -> %s", job, what, folder)
            continue
        job_log = Path(folder) / f"{ret.hydra_cfg.hydra.job.name}.log" if folder else "?"
        failures.append(f"sweep job #{first + i} ({label}): FAILED: {what} (log: {job_log})")
    finish(failures, len(rets))


def report_sweep_progress() -> bool:
    """Make Hydra's launchers report each job and end a sweep with failed jobs in one
    line each; False when the submitit launcher plugin is not installed (the basic
    launcher reports all the same)."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    if not getattr(BasicLauncher.launch, "_reports_progress", False):
        basic = BasicLauncher.launch

        @functools.wraps(basic)
        def basic_launch(self, job_overrides, initial_job_idx):
            rets = basic(self, job_overrides, initial_job_idx)
            report_returns(rets, job_overrides, initial_job_idx)
            return rets

        basic_launch._reports_progress = True
        BasicLauncher.launch = basic_launch
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
            finish(wait_reporting(jobs, job_overrides, initial_job_idx), len(jobs))
            return jobs

        submitit.AutoExecutor.map_array = map_array
        try:
            return original(self, job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = orig_map

    launch._reports_progress = True
    base.launch = launch
    return True
