"""Typed schemas of the trainer, optimizer and backbone config groups: every key, its
type, its default and the values it takes, written here once.

Each schema is registered with Hydra as ``<group>/_schema``; every YAML file of the group
extends it (``defaults: [_schema, _self_]``) and lists only what it changes, so every key
is valid under every preset (``trainer=smoke trainer.clip_grad=0.5``) and a misspelt key
or a value of the wrong type ends in one line naming the key. Each key's rule
(``surnn.checks``) and the relations between keys (``grad_accum`` divides ``batch_size``)
are checked when the schema is made, so a bad value is one line naming the key too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from surnn.checks import (
    Rule,
    at_least,
    between,
    boolean,
    int_at_least,
    is_number,
    one_of,
    positive,
)
from surnn.errors import ConfigError
from surnn.harness.positions import KINDS as POSITIONS

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the Hydra config tree
POOLS = ("mean", "last", "max")  # model.pool: over the valid positions (backbone.pool)


def setting(default: Any = MISSING, rule: Rule | None = None, factory=None) -> Any:
    """A schema key: its default (or ``factory``) and the rule its values obey."""
    meta = {"rule": rule} if rule is not None else {}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class Schema:
    """A config group's schema checks every key with its rule when it is made (by
    ``checked`` from a composed config, or directly): ``trainer.max_steps=0: expected an
    integer >= 1``. Relations between keys are checked in ``check_relations``."""

    group: ClassVar[str]

    def __post_init__(self) -> None:
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                rule.check(f"{self.group}.{f.name}", getattr(self, f.name))
        self.check_relations()

    def check_relations(self) -> None:
        pass


@dataclass
class TrainerConfig(Schema):
    group: ClassVar[str] = "trainer"

    name: str = "default"
    max_steps: int = setting(10000, int_at_least(1))  # optimizer steps
    # per optimizer step (split over grad_accum and DDP ranks)
    batch_size: int = setting(32, int_at_least(1))
    # default: the micro-batch (batch_size / grad_accum / ranks)
    eval_batch_size: int | None = setting(None, int_at_least(1, optional=True))
    grad_accum: int = setting(1, int_at_least(1))
    warmup_steps: int = setting(500, int_at_least(0))
    min_lr_ratio: float = setting(0.0, between(0.0, 1.0))  # cosine decays to lr * min_lr_ratio
    clip_grad: float | None = setting(1.0, positive(optional=True, zero_means="no clipping"))
    eval_every: int = setting(500, int_at_least(1))
    ckpt_every: int = setting(500, int_at_least(1))
    log_every: int = setting(50, int_at_least(1))
    # auto (bf16 on CUDA, fp32 on CPU), fp32, bf16
    precision: str = setting("auto", one_of("auto", "fp32", "bf16"))
    num_workers: int = setting(2, int_at_least(0))
    progress: bool = setting(True, boolean())
    flops: bool = setting(True, boolean())  # count FLOPs per sequence once per run
    # Use a prefix of the train split (debugging); a language-modelling stream: that many
    # windows of tokens.
    max_train_examples: int | None = setting(None, int_at_least(1, optional=True))
    # Evaluate on a prefix of val/test (smoke runs only: published numbers need every
    # example; results.json records the count); streams: that many windows of tokens.
    max_eval_examples: int | None = setting(None, int_at_least(1, optional=True))
    compile: bool = setting(False, boolean())  # torch.compile the model

    def check_relations(self) -> None:
        self.check_world(1)
        per_step = self.batch_size // self.grad_accum  # examples per micro-step, all ranks
        if self.max_train_examples is not None and self.max_train_examples < per_step:
            raise ConfigError.option(
                "trainer.max_train_examples",
                self.max_train_examples,
                f"fewer than one batch ({per_step} examples per micro-step); raise it or "
                "lower trainer.batch_size",
            )

    def check_world(self, world: int) -> None:
        """The batch splits evenly into grad_accum micro-batches on each of ``world``
        ranks. Made with world 1; a run on several ranks checks its world once more
        before it starts (``surnn.harness.validate.check_config``)."""
        if self.batch_size % (self.grad_accum * world):
            ranks = f" x {world} ranks" if world > 1 else ""
            raise ConfigError.option(
                "trainer.batch_size",
                self.batch_size,
                f"must be divisible by trainer.grad_accum ({self.grad_accum}){ranks}, the "
                "micro-batches it is split into",
            )

    def micro_batch(self, world: int = 1) -> int:
        """Examples per rank and micro-step."""
        return self.batch_size // (self.grad_accum * world)


def _betas(v: Any) -> bool:
    return (
        isinstance(v, list | tuple) and len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v)
    )


@dataclass
class OptimConfig(Schema):
    group: ClassVar[str] = "optim"

    name: str = setting("adamw", one_of("adamw"))
    lr: float = setting(1e-3, positive())
    weight_decay: float = setting(0.05, at_least(0))
    betas: list[float] = setting(
        factory=lambda: [0.9, 0.98], rule=Rule(_betas, "two numbers in [0, 1), e.g. [0.9, 0.98]")
    )
    eps: float = setting(1e-8, positive())
    no_decay_1d: bool = setting(True, boolean())


@dataclass
class BackboneConfig(Schema):
    group: ClassVar[str] = "model"

    name: str = MISSING  # the mixer (surnn.harness.registry.MIXERS); each model file sets it
    d_model: int = setting(128, int_at_least(1))
    n_layers: int = setting(4, int_at_least(1))
    ffn_mult: float = setting(2.0, at_least(0, note="0 = no feed-forward"))
    dropout: float = setting(0.1, between(0.0, 1.0, hi_open=True))
    pool: str = setting("mean", one_of(*POOLS))
    head_hidden: int | None = setting(None, int_at_least(1, optional=True))
    # added to the input embedding: none | sinusoidal | learned
    pos_emb: str = setting("none", one_of(*POSITIONS))
    # the mixer's options: its constructor checks them
    options: dict[str, Any] = field(default_factory=dict)


def checked(schema: type, cfg: DictConfig | dict, group: str):
    """Merge ``cfg`` onto ``schema`` and return a typed dataclass instance."""
    try:
        if isinstance(cfg, DictConfig):  # resolved in place: keys may name other groups
            cfg = OmegaConf.to_container(cfg, resolve=True)
        base = OmegaConf.structured(schema)
        merged = OmegaConf.merge(base, cfg)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        valid = ", ".join(f.name for f in fields(schema))
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None) or getattr(e, "key", None)
        where = f"{group}.{key}" if key else group
        raise ConfigError(f"{where}: {msg} (valid {group} keys: {valid})") from None
    return obj


# Trainer keys that do not change the computation: a resumed run may differ in these.
RESUME_FREE = ("progress", "num_workers", "eval_batch_size", "log_every", "ckpt_every", "flops")


def config_key(cfg: DictConfig) -> str:
    """Hash of every value that changes the computation (task, model, optimizer, trainer
    but RESUME_FREE, seed): last.pt records it, so a run resumes only into the same
    configuration, and the default run_id ends with it (``${config_key:}``), so rerunning
    a command resumes its run."""
    keep = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "optim")}
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    keep["trainer"] = {k: v for k, v in trainer.items() if k not in RESUME_FREE}
    keep["seed"] = cfg.seed
    return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def register_schemas() -> None:
    """Make ``trainer/_schema``, ``optim/_schema`` and ``model/_schema`` known to Hydra,
    and ``${config_key:}`` to OmegaConf (done on import: whatever composes the configs
    imports this module first)."""
    cs = ConfigStore.instance()
    cs.store(group="trainer", name="_schema", node=TrainerConfig)
    cs.store(group="optim", name="_schema", node=OptimConfig)
    cs.store(group="model", name="_schema", node=BackboneConfig)
    OmegaConf.register_new_resolver(
        "config_key", lambda *, _root_: config_key(_root_)[:8], replace=True
    )


register_schemas()
