#!/usr/bin/env python
"""Train and test any registered model on any task.

    python run.py task=listops model=surnn
    python run.py task=listops model=lstm trainer=smoke
    python run.py -m task=listops,image model=surnn,s4d seed=0,1,2 hydra/launcher=slurm
    python run.py experiment=demo_listops

The run folder (``outputs/<run_id>``) gets config.yaml, metrics.jsonl, checkpoints/ and
results.json. Rerunning with the same ``run_id=...`` resumes from checkpoints/last.pt.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from surnn.errors import HarnessError
from surnn.harness.cli import precheck, prechecked, sweep_job_location, variant_from_overrides

log = logging.getLogger("run")


def _fail(e: HarnessError) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from surnn.harness.metrics import multirun_job_command
    from surnn.harness.run import RunNotStarted, remove_if_only_hydra, submitit_tasks, train

    hc = HydraConfig.get()
    variant = cfg.get("variant")
    if variant is None:  # the model.* overrides name the variant
        variant = variant_from_overrides(list(hc.overrides.task))
    elif str(variant).strip().lower() in ("", "none"):
        variant = None
    cfg.variant = variant
    run_dir = hc.runtime.output_dir
    command = None
    sweep = hc.mode == RunMode.MULTIRUN
    if sweep:  # a job of a sweep: its run_id and command name its own folder
        where = sweep_job_location(run_dir, cfg.output_dir)
        for key, value in where.items():
            cfg[key] = value
        command = multirun_job_command(where, submitit_tasks())
    # the precheck's work on these values, when this process made it (a job of a sweep
    # launched elsewhere, on SLURM, checks its own config)
    checked = prechecked(cfg, last=not sweep)
    try:
        results = train(cfg, run_dir, command, checked)
    except KeyboardInterrupt:  # Ctrl-C: a run folder holding nothing of the run goes
        if not sweep:
            remove_if_only_hydra(Path(run_dir))
        raise
    except RunNotStarted as e:  # nothing of the run was written: leave no folder behind
        if not sweep:
            remove_if_only_hydra(Path(run_dir))
            _fail(e.cause)
        log.error("error: %s", e.cause)  # the sweep goes on; it reports this job at its end
        raise e.cause from None
    except HarnessError as e:
        if not sweep:
            _fail(e)
        log.error("error: %s", e)
        raise
    except Exception:
        if sweep:  # the job's log keeps the traceback; the sweep reports the job failed
            log.exception("the run failed")
        raise
    log.info(
        "done: best val %s %.4f (step %d), test %s %.4f -> %s/results.json",
        results.metric_name,
        results.best_val_metric,
        results.best_step,
        results.metric_name,
        results.test_metric,
        HydraConfig.get().runtime.output_dir,
    )
    return results.best_val_metric


def interrupted() -> None:
    """Ctrl-C ends the process as interrupted by SIGINT (what a calling shell or script
    expects), without a traceback: a run in training has saved last.pt and said how to
    resume; one interrupted before that leaves no run folder of its own."""
    sys.stderr.write("interrupted (Ctrl-C)\n")
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    try:
        try:
            precheck(sys.argv[1:])
        except HarnessError as e:
            _fail(e)
        if any(a in ("-m", "--multirun") for a in sys.argv[1:]):
            from surnn.harness.sweep import report_sweep_progress

            report_sweep_progress()  # a line per job as it ends; failed jobs, one line each
        main()
    except KeyboardInterrupt:
        interrupted()
