"""Typed schemas of the trainer, optimizer and backbone config groups: every key, its
type and its default, written here once.

Each schema is registered with Hydra as ``<group>/_schema``; every YAML file of the group
extends it (``defaults: [_schema, _self_]``) and lists only what it changes, so every key
is valid under every preset (``trainer=smoke trainer.clip_grad=0.5``) and a misspelt key
or a value of the wrong type ends in one line naming the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from surnn.errors import ConfigError


@dataclass
class TrainerConfig:
    name: str = "default"
    max_steps: int = 10000  # optimizer steps
    batch_size: int = 32  # per optimizer step (split over grad_accum and DDP ranks)
    eval_batch_size: int | None = None  # default: the micro-batch (batch_size / grad_accum / ranks)
    grad_accum: int = 1
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    clip_grad: float | None = 1.0
    eval_every: int = 500
    ckpt_every: int = 500
    log_every: int = 50
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), fp32, bf16
    num_workers: int = 2
    progress: bool = True
    flops: bool = True  # count FLOPs per sequence once per run
    # Use a prefix of the train split (debugging); a language-modelling stream: that many
    # windows of tokens.
    max_train_examples: int | None = None
    # Evaluate on a prefix of val/test (smoke runs only: published numbers need every
    # example; results.json records the count); streams: that many windows of tokens.
    max_eval_examples: int | None = None
    compile: bool = False  # torch.compile the model


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    no_decay_1d: bool = True


@dataclass
class BackboneConfig:
    name: str = MISSING  # the mixer (surnn.harness.registry.MIXERS); each model file sets it
    d_model: int = 128
    n_layers: int = 4
    ffn_mult: float = 2.0
    dropout: float = 0.1
    pool: str = "mean"
    head_hidden: int | None = None
    pos_emb: str = "none"  # none | sinusoidal | learned: added to the input embedding
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
