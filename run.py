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
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from surnn.errors import HarnessError
from surnn.harness.cli import precheck, variant_from_overrides

log = logging.getLogger("run")


def _fail(e: HarnessError) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from surnn.harness.run import RunNotStarted, remove_if_only_hydra, train

    variant = cfg.get("variant")
    if variant is None:  # the model.* overrides name the variant
        variant = variant_from_overrides(list(HydraConfig.get().overrides.task))
    elif str(variant).strip().lower() in ("", "none"):
        variant = None
    cfg.variant = variant
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        results = train(cfg, run_dir)
    except RunNotStarted as e:  # nothing of the run was written: leave no folder behind
        remove_if_only_hydra(Path(run_dir))
        _fail(e.cause)
    except HarnessError as e:
        _fail(e)
    log.info(
        "done: best val acc %.4f (step %d), test acc %.4f -> %s/results.json",
        results["best_val_acc"],
        results["best_step"],
        results["test_acc"],
        HydraConfig.get().runtime.output_dir,
    )
    return results["best_val_acc"]


if __name__ == "__main__":
    try:
        precheck(sys.argv[1:])
    except HarnessError as e:
        _fail(e)
    if any(a in ("-m", "--multirun") for a in sys.argv[1:]):
        from surnn.harness.sweep import report_sweep_progress

        report_sweep_progress()
    main()
