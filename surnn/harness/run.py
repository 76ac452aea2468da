"""From a composed config to a finished run folder.

    config -> task (registry) -> splits -> Model(backbone + mixer) -> Trainer.fit/test
    -> results.json

Writes ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/{last,best}.pt`` and
``results.json`` into the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from surnn.errors import ConfigError, DataError
from surnn.harness.config import config_key
from surnn.harness.lock import RunLock
from surnn.harness.loggers import JsonlLog, Loggers, WandbLog
from surnn.harness.metrics import run_command
from surnn.harness.results import RunResult
from surnn.harness.trainer import Trainer
from surnn.harness.validate import (  # noqa: F401
    Checked,
    build_model,
    build_task,
    check_config,
    seed_everything,
)
from surnn.provenance import device_name, git_commit, now_iso

log = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: int) -> torch.device:
    """The device of ``device=`` (its form checked by check_config): is CUDA here?"""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # one GPU per local rank: SLURM may show each task all the node's GPUs or its own
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=cpu or auto")
    return dev


def submitit_tasks() -> int:
    """How many tasks the submitit job this process belongs to has (1 outside one)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return 1
    try:
        import submitit

        return submitit.JobEnvironment().num_tasks
    except (ImportError, RuntimeError, KeyError):
        return 1


def export_slurm_ddp_env() -> bool:
    """In a submitit job of several tasks (``hydra/launcher=slurm
    hydra.launcher.tasks_per_node=8``, ``nodes=2``), set the variables torch.distributed
    reads (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) from SLURM's, through
    submitit's TorchDistributedEnvironment: the master is the job's first node, the port is
    drawn from the job id (the same after a requeue) unless MASTER_PORT is set. Returns
    whether it did (torchrun's variables, when set, are left alone)."""
    if "WORLD_SIZE" in os.environ or submitit_tasks() <= 1:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


def _ddp() -> tuple[int, int, int]:
    """This process's rank, local rank and the world size; the process group when the
    world has more than one process (torchrun's variables, or SLURM's through
    ``export_slurm_ddp_env``)."""
    export_slurm_ddp_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group(backend)
    return rank, local, world


def resume_command(command: str, run_id: str) -> str:
    """``command`` with ``run_id=...`` (the run it started) when it does not name one: the
    command that resumes this run whatever the defaults."""
    try:
        words = shlex.split(command)
    except ValueError:  # not shell syntax: say it as it is
        words = command.split()
    if any(w.startswith("run_id=") for w in words):
        return command
    return f"{command} {shlex.quote(f'run_id={run_id}')}"


class RunNotStarted(Exception):
    """Wraps a HarnessError raised before the run wrote anything into its folder: the
    caller may remove the folder Hydra made for it (``.cause`` is the error)."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


def check_splits(splits, task, tcfg, micro_bs: int, world: int) -> None:
    """Each split holds examples, and training at least one batch (else the loader loops
    or evaluation divides by zero long after the start)."""
    sizes = {s: len(getattr(splits, s)) for s in ("train", "val", "test")}
    n_train = sizes["train"]
    if tcfg.max_train_examples:
        n_train = min(n_train, tcfg.max_train_examples)
    source = task.describe().get("source") or f"data_dir={task.data_dir}"
    for split, n in sizes.items():
        if n == 0:
            raise DataError(
                f"task={task.name}: the {split} split is empty (source: {source}); restore or "
                "regenerate that data"
            )
    if n_train < micro_bs * world:
        raise DataError(
            f"task={task.name}: the train split has {n_train} examples, fewer than one batch "
            f"({micro_bs * world}); lower trainer.batch_size (source: {source})"
        )


def _take_lock(run_dir: Path, rank: int, world: int) -> RunLock | None:
    """Rank 0 locks the run folder; every rank learns whether it could."""
    lock, err = None, None
    if rank == 0:
        try:
            lock = RunLock(run_dir).acquire()
        except ConfigError as e:
            err = str(e)
    if world > 1:
        box = [err]
        dist.broadcast_object_list(box, src=0)
        err = box[0]
    if err is not None:
        raise ConfigError(err)
    return lock


@dataclass
class Setup:
    """A checked run about to start: its processes, checked config, device, locked folder."""

    rank: int
    local: int
    world: int
    command: str  # the command that reruns this run alone
    checked: Checked  # the config's schemas, task and run folder (check_config)
    device: torch.device
    run_dir: Path
    lock: RunLock | None


def train(
    cfg: DictConfig, run_dir: Path, command: str | None = None, checked: Checked | None = None
) -> RunResult:
    """Train and test one configuration; returns (and writes) results.json.

    Every value is checked, the run folder is locked (one process per folder), the data
    are loaded and checked, and only then is anything written into the folder. An error
    before that point is raised as RunNotStarted. ``command``: the command that reruns
    this run alone (results.json's ``command``; default: this process's command line).
    ``checked``: check_config's result for a config of these values, made before the run
    (run.py's precheck): what it checked is not checked again, and the model it built
    from the seed (``Checked.built``) is the run's.

    Four steps: ``setup`` (processes, config, device, lock), ``build`` (data, model),
    ``fit`` (train, then test at the best validation step) and ``report`` (the RunResult)."""
    s = setup(cfg, run_dir, command, checked)
    loggers = Loggers([])
    started = False
    try:
        commit = git_commit()  # the code that starts the run, not what the tree holds at its end
        task, splits, model = build(cfg, s)
        n_params = sum(p.numel() for p in model.parameters())
        started = True
        loggers = open_run_folder(cfg, s)
        trainer, test = fit(cfg, s, task, splits, model, n_params, loggers)
        result = report(cfg, s, task, splits, model, n_params, trainer, test, commit)
        if s.rank == 0:
            result.save(s.run_dir / "results.json")
            loggers.log({"step": trainer.step, **test})
            loggers.summary(result.to_dict())
        return result
    finally:
        loggers.close()
        if s.lock is not None:
            s.lock.release(remove=not started)


def setup(
    cfg: DictConfig, run_dir: Path, command: str | None, checked: Checked | None = None
) -> Setup:
    """The process group, the checked config (``checked`` reused when given) and device,
    and the locked run folder (rank 0's when ranks disagree); RunNotStarted on an error,
    with nothing written."""
    rank, local, world = _ddp()
    command = command or run_command()
    if world > 1 and rank != 0:
        # Ranks may resolve a time-stamped run_id a second apart: rank 0's folder wins,
        # and this rank's own (empty) Hydra folder is removed below.
        logging.getLogger().setLevel(logging.ERROR)  # warnings print once, from rank 0
        import warnings

        warnings.simplefilter("ignore")
    try:
        if checked is None:
            checked = check_config(cfg, world=world, model=False)
        else:
            checked = checked.reused(cfg, world)
    except ConfigError as e:
        raise RunNotStarted(e) from None
    try:
        device = resolve_device(str(cfg.device), local)
    except ConfigError as e:
        raise RunNotStarted(e) from None
    if world > 1:
        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)
        if rank != 0 and Path(shared[0]) != Path(run_dir):
            remove_if_only_hydra(Path(run_dir))
        run_dir = shared[0]
    run_dir = Path(run_dir)
    try:
        lock = _take_lock(run_dir, rank, world)
    except ConfigError as e:
        raise RunNotStarted(e) from None
    return Setup(rank, local, world, command, checked, device, run_dir, lock)


def build(cfg: DictConfig, s: Setup) -> tuple[Any, Any, torch.nn.Module]:
    """(task, splits, model): the data loaded and checked, the model built from the seed
    (or the one the check built from it); RunNotStarted on a config or data error."""
    task, tcfg, built = s.checked.task, s.checked.trainer, s.checked.built
    try:
        splits = task.splits()
        check_splits(splits, task, tcfg, tcfg.micro_batch(s.world), s.world)
        if built is not None:
            model = built.take(int(cfg.seed))
        else:
            seed_everything(int(cfg.seed))
            model = build_model(task, s.checked.model)
    except (ConfigError, DataError) as e:
        raise RunNotStarted(e) from None
    return task, splits, model


def open_run_folder(cfg: DictConfig, s: Setup) -> Loggers:
    """Rank 0 writes config.yaml and opens the loggers (metrics.jsonl, wandb)."""
    sinks: list = []
    if s.rank == 0:
        OmegaConf.save(cfg, s.run_dir / "config.yaml", resolve=True)
        resumed = _resumed(s.run_dir)
        sinks.append(
            JsonlLog(
                s.run_dir / "metrics.jsonl", resume_step=_ckpt_step(s.run_dir) if resumed else None
            )
        )
        lcfg = (
            OmegaConf.to_container(cfg.logger, resolve=True)
            if "logger" in cfg
            else {"name": "none"}
        )
        if lcfg.get("name") == "wandb":
            sinks.append(
                WandbLog(
                    lcfg, s.run_dir, str(cfg.run_id), OmegaConf.to_container(cfg, resolve=True)
                )
            )
    return Loggers(sinks)


def fit(
    cfg: DictConfig,
    s: Setup,
    task,
    splits,
    model: torch.nn.Module,
    n_params: int,
    loggers: Loggers,
) -> tuple[Trainer, dict[str, Any]]:
    """Train (resuming from checkpoints/last.pt when there is one), then test at the best
    validation weights: (the trainer, the test split's metrics as ``test/<name>``)."""
    log.info(
        "task=%s model=%s params=%d device=%s run_dir=%s%s",
        task.name,
        s.checked.model.name,
        n_params,
        s.device,
        s.run_dir,
        " (resuming)" if _resumed(s.run_dir) else "",
    )
    trainer = Trainer(
        model,
        task,
        splits,
        s.checked.trainer,
        s.checked.optim,
        s.run_dir,
        loggers,
        s.device,
        int(cfg.seed),
        s.rank,
        s.world,
        config_key(cfg),
        resume_command(s.command, str(cfg.run_id)),
    )
    try:
        trainer.fit()  # installs the stop signals' handlers (preemption, Ctrl-C)
        return trainer, trainer.test()
    finally:
        trainer.signals.uninstall()  # the handlers of before, for whatever runs next


def report(
    cfg: DictConfig,
    s: Setup,
    task,
    splits,
    model: torch.nn.Module,
    n_params: int,
    trainer: Trainer,
    test: dict[str, Any],
    commit: str,
) -> RunResult:
    """The run's RunResult (results.json) from the trainer and its test metrics; FLOPs
    counted on rank 0 when ``trainer.flops`` is set (last: the timings and peak memory
    before it are the run's own)."""
    obj = trainer.objective
    metric = obj.metric
    test_metrics = {
        k.split("/", 1)[1]: v
        for k, v in test.items()
        if "/" in k and not k.split("/", 1)[1].startswith("layer")
    }
    classify = obj.name == "classify"  # the fields the LRA tables read
    result = RunResult(
        task=task.name,
        model=s.checked.model.name,
        seed=int(cfg.seed),
        run_id=str(cfg.run_id),
        steps=trainer.step,
        objective=obj.name,
        metric_name=metric,
        metric_higher_is_better=obj.higher_is_better,
        best_val_metric=trainer.best["value"],
        best_val_loss=trainer.best["val_loss"],
        best_step=trainer.best["step"],
        test_metric=test[f"test/{metric}"],
        test_metrics=test_metrics,
        test_loss=test["test/loss"],
        test_examples=test["test/n"],
        carry_state=trainer.carry if trainer.stream else None,
        update_rate=_layer_rates(test, "update_rate"),
        active_rate=_layer_rates(test, "active_rate"),
        gate_holders=_layer_rates(test, "holders") or None,
        params=n_params,
        **trainer.summary(),
        device=device_name(s.device, threads=True),
        threads=torch.get_num_threads(),
        world_size=s.world,
        precision="bf16" if trainer.amp else "fp32",
        kernel=_kernel(model, s.device),
        git_commit=commit,
        torch=torch.__version__,
        date=now_iso(),
        variant=cfg.get("variant"),
        command=s.command,
        data=task.describe(),
        split_sizes={k: len(getattr(splits, k)) for k in ("train", "val", "test")},
        best_val_acc=trainer.best["val_acc"] if classify else None,
        test_majority_class=test["test/majority"] if classify else None,
    )
    if s.checked.trainer.flops and s.rank == 0:
        result = dataclasses.replace(result, **trainer.flops())
    return result


def _resumed(run_dir: Path) -> bool:
    """Whether the run resumes from a checkpoint (its folder holds checkpoints/last.pt)."""
    return (run_dir / "checkpoints" / "last.pt").exists()


def _kernel(model: torch.nn.Module, device: torch.device) -> str | None:
    """The implementation the model's suRNN layers ran (None: the model has none)."""
    from surnn.layer import SelectiveUpdateGRU
    from surnn.ops import resolve_impl

    found = sorted(
        {
            resolve_impl(m.impl, device, next(m.parameters()).dtype)
            for m in model.modules()
            if isinstance(m, SelectiveUpdateGRU)
        }
    )
    return ", ".join(found) or None


HYDRA_FILES = {".hydra", "run.log"}


def remove_if_only_hydra(run_dir: Path) -> bool:
    """Remove a run folder that holds nothing but what Hydra wrote at job start (a run
    that never started must leave nothing behind); returns whether it did."""
    import shutil

    try:
        names = {p.name for p in run_dir.iterdir()}
    except OSError:
        return False
    if names <= HYDRA_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)
        return True
    return False


def _ckpt_step(run_dir: Path) -> int:
    from surnn.harness import checkpoint

    return int(checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"])


def _layer_rates(res: dict[str, Any], name: str) -> dict[str, float]:
    """{"layer0": rate, ...} from eval keys like ``test/layer0/update_rate``."""
    out = {}
    for k, v in res.items():
        if k.endswith("/" + name):
            out[k.split("/", 1)[1].rsplit("/", 1)[0]] = v
    return out
