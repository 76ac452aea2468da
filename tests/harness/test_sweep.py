"""surnn.harness.sweep: a line per job naming its run folder, and a sweep with failed jobs
ends in one line per failure naming its log (exit status 1), for submitit's jobs and for
Hydra's basic launcher. The end-to-end sweeps are in test_run_sweep.py and test_slurm.py."""

from __future__ import annotations

import logging

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from surnn.errors import TrainingError
from surnn.harness import sweep

OVERRIDES = [["task=listops", "optim.lr=0.003"], ["task=listops", "optim.lr=1e9"]]
NAN = "non-finite training loss (nan) at step 2; stopped before updating the weights"


def job_return(folder, value=None, error=None) -> JobReturn:
    ret = JobReturn()
    ret.hydra_cfg = OmegaConf.create(
        {"hydra": {"runtime": {"output_dir": str(folder)}, "job": {"name": "run"}}}
    )
    ret.status = JobStatus.FAILED if error else JobStatus.COMPLETED
    ret._return_value = error if error else value
    return ret


def test_basic_launcher_sweep_ends_with_one_line_per_failed_job(tmp_path, caplog, capsys):
    rets = [
        job_return(tmp_path / "j0", value=0.25),
        job_return(tmp_path / "j1", error=TrainingError(NAN)),
    ]
    with caplog.at_level(logging.INFO, logger="sweep"), pytest.raises(SystemExit) as e:
        sweep.report_returns(rets, OVERRIDES, 0)
    assert e.value.code == 1
    assert f"sweep job 1/2 (#0 optim.lr=0.003): best val 0.2500 -> {tmp_path / 'j0'}" in caplog.text
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: 1 of 2 sweep job(s) failed:",
        f"  sweep job #1 (optim.lr=1e9): FAILED: TrainingError: {NAN} "
        f"(log: {tmp_path / 'j1' / 'run.log'})",
    ]


class FakeJob:
    """A submitit job as the launcher sees it: done(), results(), paths.stderr."""

    def __init__(self, ret=None, error=None, stderr="x.err"):
        self.ret, self.error = ret, error
        self.paths = type("Paths", (), {"stderr": stderr})()

    def done(self):
        return True

    def results(self):
        if self.error:
            raise self.error
        return [self.ret]


def test_submitit_jobs_are_reported_as_they_end_and_failures_in_one_line(tmp_path, caplog):
    from submitit.core.utils import UncompletedJobError

    died = UncompletedJobError(  # what submitit raises for a job that left no result
        "Job 7_2 (task: 0) with path /s/7_2_0_result.pkl\nhas not produced any output "
        "(state: OUT_OF_MEMORY)\nError stream produced:\n" + "-" * 40 + "\nTraceback (...)\n"
        "  File ...\nRuntimeError: DataLoader worker (pid 12) is killed by signal: Killed."
    )
    jobs = [
        FakeJob(job_return(tmp_path / "j0", value=0.5)),
        FakeJob(job_return(tmp_path / "j1", error=TrainingError(NAN)), stderr="/s/7_1_0_log.err"),
        FakeJob(error=died, stderr="/s/7_2_0_log.err"),
    ]
    overrides = [*OVERRIDES, ["task=listops", "optim.lr=0.1"]]
    with caplog.at_level(logging.INFO, logger="sweep"):
        failures = sweep.wait_reporting(jobs, overrides, 0, poll_s=0)
    assert f"sweep job 1/3 (#0 optim.lr=0.003): best val 0.5000 -> {tmp_path / 'j0'}" in caplog.text
    assert failures == [
        f"sweep job #1 (optim.lr=1e9): FAILED: TrainingError: {NAN} ({tmp_path / 'j1'}; "
        "log: /s/7_1_0_log.err)",
        "sweep job #2 (optim.lr=0.1): FAILED: RuntimeError: DataLoader worker (pid 12) is "
        "killed by signal: Killed. (log: /s/7_2_0_log.err)",
    ]
