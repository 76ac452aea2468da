"""LRA experiment configs of the baselines: each composes, passes the typed checks, names its
source, and builds a model that runs a short batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from surnn.harness.backbone import Model
from surnn.harness.cli import CONFIG_DIR, choices
from surnn.harness.config import BackboneConfig, OptimConfig, TrainerConfig, checked

LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
BASELINES = ("s4d", "transformer", "gru", "lstm")
EXPERIMENTS = [f"lra/{t}_{m}" for t in LRA_TASKS for m in BASELINES]
LENGTH = {"listops": 2000, "text": 4096, "retrieval": 4000, "image": 1024}


def test_every_baseline_has_a_config_per_lra_task():
    assert set(EXPERIMENTS) <= set(choices("experiment"))


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_lra_experiment_composes_and_builds(exp):
    text = (CONFIG_DIR / "experiment" / f"{exp}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert "Source:" in text or "HARNESS CHOICE" in text  # every setting says where it is from
    task, model = exp.split("/")[1].split("_")
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=[f"experiment={exp}", "logger=none"])
    assert cfg.task.name == task and cfg.model.name == model
    mcfg = checked(BackboneConfig, cfg.model, "model")
    tcfg = checked(TrainerConfig, cfg.trainer, "trainer")
    ocfg = checked(OptimConfig, cfg.optim, "optim")
    assert tcfg.max_steps > tcfg.eval_every > 0 and 0 < ocfg.lr < 0.1
    values = OmegaConf.select(cfg, "task.options.input") == "values"
    standin = SimpleNamespace(
        n_classes=2,
        input_kind="values" if values else "tokens",
        vocab_size=None if values else 257,
        input_dim=1 if values else None,
        max_len=LENGTH.get(task, 16384 if task == "pathx" else 1024),
        dual=task == "retrieval",
    )
    net = Model(
        standin,
        mcfg.name,
        mcfg.options,
        d_model=mcfg.d_model,
        n_layers=1,  # the published depth is checked above; one layer keeps the test fast
        ffn_mult=mcfg.ffn_mult,
        dropout=mcfg.dropout,
        pool=mcfg.pool,
    )
    L = 24
    x = torch.rand(2, L, 1) if values else torch.randint(1, 257, (2, L))
    batch = {"x": x, "lengths": torch.tensor([L, 9])}
    if standin.dual:
        batch |= {"x2": x.flip(1), "lengths2": torch.tensor([5, L])}
    logits, _ = net(batch)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
