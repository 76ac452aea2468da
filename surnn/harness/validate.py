"""Every value of a composed config checked before anything runs.

``check_config`` makes the trainer, optimizer and backbone schemas (``surnn.harness.config``:
each checks its keys' types, ranges and relations), checks what no schema holds (the seed,
the logger, the device, the paths: ``data_dir``, ``output_dir``, the run folder) and builds
the task and (with ``model``) the model on the CPU without reading data: their constructors
check the task and mixer options, and ``build_task``/``build_model`` name a bad option by its
full key (``task.options.max_len``, ``model.options.gate.init_rate``). A bad value ends in one
ConfigError line naming the key, the value and what is allowed; run.py calls it before Hydra
makes the run folder, so nothing is left behind, and hands what it checked and built (a
``Checked``) to the run, which checks only what differs (``Checked.reused``).
"""

from __future__ import annotations

import copy
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from surnn.checks import is_int
from surnn.errors import ConfigError, HarnessError, show
from surnn.harness.backbone import Model, build_mixer, layer_plan
from surnn.harness.config import BackboneConfig, OptimConfig, TrainerConfig, checked
from surnn.harness.registry import TASKS

LOGGER_MODES = ("offline", "online", "disabled")


# ---------------------------------------------------------------------------- paths


def check_folder(key: str, value: Any, must_exist: bool = False) -> Path:
    """A folder path: an existing folder, or one that can be made (its nearest existing
    parent is a writable folder)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={show(value)}: expected a folder path")
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
            f"run_id={show(value)}: expected a non-empty name (letters, digits, -_.; a "
            "relative sub/folder is allowed, '..' and absolute paths are not)"
        )
    return s


# ---------------------------------------------------------------------------- building


def build_task(cfg: DictConfig):
    """The task object from ``cfg.task``: its constructor checks its options (a bad one is
    named by its key under ``task.options``); reads no data."""
    name = cfg.task.name
    cls = TASKS.get(name)
    options = OmegaConf.to_container(cfg.task.get("options", {}) or {}, resolve=True)
    if not isinstance(options, dict):
        raise ConfigError(f"task.options={show(options)}: expected a mapping of option: value")
    try:
        return cls(data_dir=cfg.data_dir, **options)
    except ConfigError as e:  # the task names its option; here it sits under task.options.
        raise e.within("task.options.") from None
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


def build_model(task, mcfg: BackboneConfig, idle: bool = False) -> Model:
    """The model (backbone + mixer); a mixer option the layer rejects is a ConfigError.
    ``idle``: also build the mixers of a hybrid's unused option blocks, so that their
    options are checked too (a layer added to ``model.options.layers`` later uses them)."""
    if idle:
        check_idle_mixers(task, mcfg)
    with _layer_errors(mcfg):
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


def check_idle_mixers(task, mcfg: BackboneConfig) -> None:
    """Build (and drop) the mixers of a hybrid's unused option blocks: their options are
    checked as the layers' own."""
    with _layer_errors(mcfg):
        for kind, options, where in layer_plan(mcfg.name, mcfg.options, mcfg.n_layers, idle=True):
            build_mixer(kind, options, where, mcfg.d_model, task.max_len, causal=False)


@contextmanager
def _layer_errors(mcfg: BackboneConfig):
    """An error of a layer's constructor as one ConfigError line naming the options."""
    try:
        yield
    except HarnessError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, ZeroDivisionError) as e:
        opts = ", ".join(f"{k}={show(v)}" for k, v in sorted(_flat(mcfg.options).items()))
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"model={mcfg.name}: the options ({opts}) cannot build the layer ({msg}); see "
            f"configs/model/{mcfg.name}.yaml"
        ) from None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device's) as a run starts."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class SeededModel:
    """The run's model, built as the run builds it (``seed_everything(seed)``, then
    ``build_model``) and the random state its build left (Python's, NumPy's, torch's CPU
    generator): a run that takes it goes on from that state, so its weights and every
    number after them are those of a model built in place."""

    model: Model
    rng: tuple[Any, Any, torch.Tensor]

    @classmethod
    def build(cls, task, mcfg: BackboneConfig, seed: int) -> SeededModel:
        """Built on the CPU; the caller's random streams are left as they were (only the
        CPU generator is seeded here: the build draws from no other)."""
        py, npy = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed)
                torch.default_generator.manual_seed(seed)
                model = build_model(task, mcfg)
                rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        finally:
            random.setstate(py)
            np.random.set_state(npy)
        return cls(model, rng)

    def take(self, seed: int) -> Model:
        """The model, with every generator where ``seed_everything(seed)`` and the build
        would have left it."""
        seed_everything(seed)
        py, npy, cpu = self.rng
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        return self.model


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------------------- the check


@dataclass
class Checked:
    """A checked config: its schemas, its task and run folder, and (``keep``) the run's
    model built from its seed."""

    trainer: TrainerConfig
    optim: OptimConfig
    model: BackboneConfig
    task: Any
    run_dir: Path
    built: SeededModel | None = None

    def reused(self, cfg: DictConfig, world: int = 1) -> Checked:
        """This check for ``cfg``, a config of the same values but perhaps another run
        folder (a sweep job names its own): checks what it has not checked, the run
        folder when it differs, the batch's split over ``world`` ranks."""
        if world > 1:
            self.trainer.check_world(world)
        run_dir = Path(str(cfg.output_dir)).expanduser() / str(cfg.run_id)
        if run_dir != self.run_dir:
            run_dir = check_run_folder(cfg)
        return replace(self, run_dir=run_dir)


def check_run_folder(cfg: DictConfig) -> Path:
    """The run folder ``output_dir/run_id``: a folder that exists or can be made, and takes
    a new file."""
    out = check_folder("output_dir", cfg.output_dir)
    run_id = check_run_id(cfg.run_id)
    run_dir = out / run_id
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_id={run_id}: {run_dir} is a file, not a run folder")
    check_writable("output_dir", cfg.output_dir, run_dir)
    return run_dir


def check_config(
    cfg: DictConfig, world: int = 1, model: bool = True, keep: bool = False
) -> Checked:
    """Check every value of a composed config; raises ConfigError (one line) on the first
    bad one. Builds the task and (with ``model``) the model on the CPU, reading no data.
    ``keep``: the model built is the run's, from its seed (``Checked.built``), unless its
    size is read from the data (a vocabulary: the run builds it then)."""
    seed = cfg.get("seed")
    if not is_int(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={show(seed)}: expected an integer in [0, 2**32)")
    for key in ("task", "model", "trainer", "optim"):
        if not isinstance(cfg.get(key), DictConfig):
            raise ConfigError(f"{key}: missing from the config; choose one with {key}=<name>")
    tcfg: TrainerConfig = checked(TrainerConfig, cfg.trainer, "trainer")
    ocfg: OptimConfig = checked(OptimConfig, cfg.optim, "optim")
    mcfg: BackboneConfig = checked(BackboneConfig, cfg.model, "model")
    if world > 1:  # the schema checked one rank; the ranks are known now
        tcfg.check_world(world)

    lcfg = cfg.get("logger")
    if lcfg is not None:
        name = lcfg.get("name")
        if name not in ("wandb", "none"):
            raise ConfigError(f"logger.name={show(name)}: expected wandb or none")
        if name == "wandb" and lcfg.get("mode", "offline") not in LOGGER_MODES:
            raise ConfigError(
                f"logger.mode={show(lcfg.get('mode'))}: expected one of {', '.join(LOGGER_MODES)}"
            )
    device = str(cfg.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise ConfigError(f"device={device!r}: expected auto, cpu, cuda or cuda:N")

    check_folder("data_dir", cfg.data_dir)
    run_dir = check_run_folder(cfg)

    task = build_task(cfg)
    built = None
    if model:
        probe = _sized(task)
        with torch.random.fork_rng(devices=[]):  # the check draws none of the run's numbers
            if keep and probe is task:
                check_idle_mixers(task, mcfg)
            else:
                build_model(probe, mcfg, idle=True)
        if keep and probe is task:
            built = SeededModel.build(task, mcfg, int(seed))
    return Checked(tcfg, ocfg, mcfg, task, run_dir, built)
