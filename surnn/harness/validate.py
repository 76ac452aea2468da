"""Every value of a composed config checked before anything runs.

``check_config`` types the trainer, optimizer and backbone groups (their schemas in
``surnn.harness.config``), checks each numeric key against its range and the relations
between keys (``grad_accum`` divides ``batch_size``, ...), the paths (``data_dir``,
``output_dir``, the run folder), the logger, and builds the task (its constructor checks
the task options) and the model (the mixers check their options) without reading data.
A bad value ends in one ConfigError line naming the key, the value and what is allowed;
run.py calls it before Hydra makes the run folder, so nothing is left behind.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from surnn.errors import ConfigError, HarnessError
from surnn.harness.backbone import Model
from surnn.harness.config import BackboneConfig, OptimConfig, TrainerConfig, checked
from surnn.harness.registry import TASKS

# ---------------------------------------------------------------------------- rules


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def int_at_least(lo: int, optional: bool = False) -> tuple[Callable[[Any], bool], str]:
    text = f"an integer >= {lo}" + (" or null" if optional else "")
    return (lambda v: (optional and v is None) or (_int(v) and v >= lo)), text


def positive(optional: bool = False, zero_means: str | None = None):
    if zero_means:
        text = f"a number > 0 (0 = {zero_means})" + (" or null" if optional else "")
        return (lambda v: (optional and v is None) or (_num(v) and v >= 0)), text
    text = "a number > 0" + (" or null" if optional else "")
    return (lambda v: (optional and v is None) or (_num(v) and v > 0)), text


def between(lo: float, hi: float, hi_open: bool = False):
    text = f"a number in [{lo}, {hi}{')' if hi_open else ']'}"
    return (lambda v: _num(v) and lo <= v and (v < hi if hi_open else v <= hi)), text


def one_of(*choices: Any):
    return (lambda v: v in choices), "one of " + ", ".join(str(c) for c in choices)


def boolean():
    return (lambda v: isinstance(v, bool)), "true or false"


TRAINER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_steps": int_at_least(1),
    "batch_size": int_at_least(1),
    "eval_batch_size": int_at_least(1, optional=True),
    "grad_accum": int_at_least(1),
    "warmup_steps": int_at_least(0),
    "min_lr_ratio": between(0.0, 1.0),
    "clip_grad": positive(optional=True, zero_means="no clipping"),
    "eval_every": int_at_least(1),
    "ckpt_every": int_at_least(1),
    "log_every": int_at_least(1),
    "precision": one_of("auto", "fp32", "bf16"),
    "num_workers": int_at_least(0),
    "progress": boolean(),
    "flops": boolean(),
    "max_train_examples": int_at_least(1, optional=True),
    "max_eval_examples": int_at_least(1, optional=True),
    "compile": boolean(),
}
OPTIM_RULES = {
    "name": one_of("adamw"),
    "lr": positive(),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "betas": (
        lambda v: (
            isinstance(v, list | tuple)
            and len(v) == 2
            and all(_num(b) for b in v)
            and all(0 <= b < 1 for b in v)
        ),
        "two numbers in [0, 1), e.g. [0.9, 0.98]",
    ),
    "eps": positive(),
    "no_decay_1d": boolean(),
}
MODEL_RULES = {
    "d_model": int_at_least(1),
    "n_layers": int_at_least(1),
    "ffn_mult": (lambda v: _num(v) and v >= 0, "a number >= 0 (0 = no feed-forward)"),
    "dropout": between(0.0, 1.0, hi_open=True),
    "pool": one_of("mean", "last", "max"),
    "head_hidden": int_at_least(1, optional=True),
    "pos_emb": one_of("none", "sinusoidal", "learned"),
}
LOGGER_MODES = ("offline", "online", "disabled")


def _apply(obj: Any, rules: dict, group: str) -> None:
    for key, (ok, allowed) in rules.items():
        v = getattr(obj, key)
        if not ok(v):
            raise ConfigError(f"{group}.{key}={_show(v)}: expected {allowed}")


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return repr(v)
    return str(v)


# ---------------------------------------------------------------------------- paths


def check_folder(key: str, value: Any, must_exist: bool = False) -> Path:
    """A folder path: an existing folder, or one that can be made (its nearest existing
    parent is a writable folder)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={_show(value)}: expected a folder path")
    p = Path(value).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{key}={value}: is a file, not a folder; give a folder path")
        return p
    if must_exist:
        raise ConfigError(f"{key}={value}: no such folder")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}={value}: {parent} is a file, so the folder cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={value}: cannot create it ({parent} is not writable)")
    return p


def check_writable(key: str, value: Any, path: Path) -> None:
    """The run writes into ``path``: it, or the nearest folder above it that exists, must
    take a new file. Tried, not inferred from permission bits (a read-only file system
    refuses root too): a refusal is one line here, before Hydra makes anything."""
    import tempfile

    p = path.absolute()
    while not p.exists():
        p = p.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=p)
    except OSError as e:
        raise ConfigError(
            f"{key}={value}: cannot write into {p} ({e.strerror or e}); choose a writable {key}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_run_id(value: Any) -> str:
    s = "" if value is None else str(value)
    parts = Path(s).parts
    if not s.strip() or s.startswith(("/", "~")) or ".." in parts or s != s.strip():
        raise ConfigError(
            f"run_id={_show(value)}: expected a non-empty name (letters, digits, -_.; a "
            "relative sub/folder is allowed, '..' and absolute paths are not)"
        )
    return s


# ---------------------------------------------------------------------------- building


def build_task(cfg: DictConfig):
    """The task object from ``cfg.task`` (checks its options; reads no data)."""
    name = cfg.task.name
    cls = TASKS.get(name)
    options = OmegaConf.to_container(cfg.task.get("options", {}) or {}, resolve=True)
    try:
        return cls(data_dir=cfg.data_dir, **options)
    except TypeError as e:
        raise ConfigError(
            f"task={name}: bad task option ({e}); see configs/task/{name}.yaml for its options"
        ) from None


def _sized(task):
    """The task as the model sees it. A vocabulary read from the data (WikiText) is unknown
    before the data are read: a small stand-in vocabulary checks every other option."""
    if getattr(task, "input_kind", None) != "tokens" or task.vocab_size:
        return task
    probe = copy.copy(task)
    probe.vocab_size, probe.n_classes = 8, 7
    if hasattr(probe, "adaptive_cutoffs"):
        probe.adaptive_cutoffs = []
    return probe


def build_model(task, mcfg: BackboneConfig) -> Model:
    """The model (backbone + mixer); a mixer option the layer rejects is a ConfigError."""
    try:
        return Model(
            task,
            mixer=mcfg.name,
            mixer_options=mcfg.options,
            d_model=mcfg.d_model,
            n_layers=mcfg.n_layers,
            ffn_mult=mcfg.ffn_mult,
            dropout=mcfg.dropout,
            pool=mcfg.pool,
            head_hidden=mcfg.head_hidden,
            pos_emb=mcfg.pos_emb,
        )
    except HarnessError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, ZeroDivisionError) as e:
        opts = ", ".join(f"{k}={_show(v)}" for k, v in sorted(_flat(mcfg.options).items()))
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"model={mcfg.name}: the options ({opts}) cannot build the layer ({msg}); see "
            f"configs/model/{mcfg.name}.yaml"
        ) from None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Mixer options checked by name before the layer sees them (the layers check the rest):
# sizes and counts are positive integers, dropouts probabilities, learning rates positive.
_OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "hidden_size": int_at_least(1, optional=True),
    "n_heads": int_at_least(1),
    "qkv_dim": int_at_least(1, optional=True),
    "d_state": int_at_least(2),
    "n_freqs": int_at_least(1, optional=True),
    "group_size": int_at_least(1, optional=True),
    "period": int_at_least(1, optional=True),
    "dropout": between(0.0, 1.0, hi_open=True),
    "attn_dropout": between(0.0, 1.0, hi_open=True),
    "lr": positive(optional=True),
    "lr_A": positive(optional=True),
    "lr_dt": positive(optional=True),
    "dt_min": positive(),
    "dt_max": positive(),
    "period_min": positive(optional=True),
    "period_max": positive(optional=True),
    "width": positive(optional=True),
    "temperature": positive(optional=True),
    "amplitude": (lambda v: v is None or _num(v), "a number or null"),
    "init_rate": (lambda v: v is None or (_num(v) and 0 < v <= 1), "a number in (0, 1] or null"),
    "target_rate": (lambda v: v is None or (_num(v) and 0 <= v <= 1), "a number in [0, 1] or null"),
    "rate_penalty": (lambda v: v is None or (_num(v) and v >= 0), "a number >= 0 or null"),
    "bidirectional": boolean(),
    "causal": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "learn_freqs": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
}


# Task options checked by name (each task's constructor checks its own choices: input,
# resolution, difficulty, generator bounds, unknown options).
_TASK_OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_len": int_at_least(1),
    "doc_bytes": int_at_least(1),
    "val_size": int_at_least(1),
    "val_fraction": between(0.0, 1.0, hi_open=True),
    "split_seed": int_at_least(0),
    "permutation_seed": int_at_least(0),
    "seed": int_at_least(0),
    "n": int_at_least(1),
    "n_train": int_at_least(1, optional=True),  # memory tasks: null = fresh examples per step
    "n_val": int_at_least(1),
    "n_test": int_at_least(1),
    "min_length": int_at_least(0),
    "max_length": int_at_least(1),
    "max_depth": int_at_least(1),
    "max_args": int_at_least(2),
    "workers": int_at_least(1, optional=True),
    "append_eos": boolean(),
    "hub": boolean(),
    "skip_unreadable": boolean(),
}


def check_task_options(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg.task.get("options", {}) or {}, resolve=True)
    if not isinstance(options, dict):
        raise ConfigError(f"task.options={_show(options)}: expected a mapping of option: value")
    for key, v in _flat(options).items():
        rule = _TASK_OPTION_RULES.get(key.rsplit(".", 1)[-1])
        if rule and not rule[0](v):
            raise ConfigError(f"task.options.{key}={_show(v)}: expected {rule[1]}")


def check_model_options(mcfg: BackboneConfig) -> None:
    for key, v in _flat(mcfg.options).items():
        rule = _OPTION_RULES.get(key.rsplit(".", 1)[-1])
        if rule and not rule[0](v):
            raise ConfigError(f"model.options.{key}={_show(v)}: expected {rule[1]}")


# ---------------------------------------------------------------------------- the check


@dataclass
class Checked:
    trainer: TrainerConfig
    optim: OptimConfig
    model: BackboneConfig
    task: Any
    run_dir: Path


def check_trainer(tcfg: TrainerConfig, world: int = 1) -> None:
    _apply(tcfg, TRAINER_RULES, "trainer")
    if tcfg.batch_size % (tcfg.grad_accum * world):
        ranks = f" x {world} ranks" if world > 1 else ""
        raise ConfigError(
            f"trainer.batch_size={tcfg.batch_size}: must be divisible by trainer.grad_accum "
            f"({tcfg.grad_accum}){ranks}, the micro-batches it is split into"
        )
    micro = tcfg.batch_size // (tcfg.grad_accum * world)
    if tcfg.max_train_examples is not None and tcfg.max_train_examples < micro * world:
        raise ConfigError(
            f"trainer.max_train_examples={tcfg.max_train_examples}: fewer than one batch "
            f"({micro * world} examples per micro-step); raise it or lower trainer.batch_size"
        )


def check_config(cfg: DictConfig, world: int = 1, model: bool = True) -> Checked:
    """Check every value of a composed config; raises ConfigError (one line) on the first
    bad one. Builds the task and (with ``model``) the model on the CPU, reading no data."""
    seed = cfg.get("seed")
    if not _int(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={_show(seed)}: expected an integer in [0, 2**32)")
    for key in ("task", "model", "trainer", "optim"):
        if not isinstance(cfg.get(key), DictConfig):
            raise ConfigError(f"{key}: missing from the config; choose one with {key}=<name>")
    tcfg: TrainerConfig = checked(TrainerConfig, cfg.trainer, "trainer")
    ocfg: OptimConfig = checked(OptimConfig, cfg.optim, "optim")
    mcfg: BackboneConfig = checked(BackboneConfig, cfg.model, "model")
    check_trainer(tcfg, world)
    _apply(ocfg, OPTIM_RULES, "optim")
    _apply(mcfg, MODEL_RULES, "model")
    check_model_options(mcfg)

    lcfg = cfg.get("logger")
    if lcfg is not None:
        name = lcfg.get("name")
        if name not in ("wandb", "none"):
            raise ConfigError(f"logger.name={_show(name)}: expected wandb or none")
        if name == "wandb" and lcfg.get("mode", "offline") not in LOGGER_MODES:
            raise ConfigError(
                f"logger.mode={_show(lcfg.get('mode'))}: expected one of {', '.join(LOGGER_MODES)}"
            )
    device = str(cfg.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise ConfigError(f"device={device!r}: expected auto, cpu, cuda or cuda:N")

    check_folder("data_dir", cfg.data_dir)
    out = check_folder("output_dir", cfg.output_dir)
    run_id = check_run_id(cfg.run_id)
    run_dir = out / run_id
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_id={run_id}: {run_dir} is a file, not a run folder")
    check_writable("output_dir", cfg.output_dir, run_dir)

    check_task_options(cfg)
    task = build_task(cfg)
    if model:
        import torch

        with torch.random.fork_rng(devices=[]):
            build_model(_sized(task), mcfg)
    return Checked(tcfg, ocfg, mcfg, task, run_dir)
