"""Experiment presets (LRA: every baseline and suRNN; pixel-level: every model): each
extends its task's budget, composes, passes the typed checks, names its source, and builds a
model that runs a short batch; the suRNN presets share the GRU presets' budgets and set the
paper's gate regime."""

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
MODELS = (*BASELINES, "surnn")
EXPERIMENTS = [f"lra/{t}_{m}" for t in LRA_TASKS for m in MODELS]
PIXEL = [f"pixel/{t}_{m}" for t in ("smnist", "psmnist", "scifar") for m in MODELS]
MINI = [f"mini/{t}_{m}" for t in ("listops", "pathfinder") for m in MODELS]
LENGTH = {"listops": 2000, "text": 4096, "retrieval": 4000, "image": 1024, "pathfinder": 1024}
LENGTH |= {"pathx": 16384, "smnist": 784, "psmnist": 784, "scifar": 1024}


def _compose(exp, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=[f"experiment={exp}", "logger=none", *overrides])


def test_every_model_has_a_config_per_lra_and_pixel_task():
    assert set(EXPERIMENTS) | set(PIXEL) <= set(choices("experiment"))


BUDGETS = [f"lra/{t}" for t in LRA_TASKS] + [f"pixel/{t}" for t in ("smnist", "psmnist", "scifar")]
BUDGETS += ["mini/listops", "mini/pathfinder"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_each_models_preset_extends_its_tasks_budget_and_sets_the_model(budget):
    """As the S4 repository's experiments: one budget per task, a file per model on it."""
    for m in MODELS:
        text = (CONFIG_DIR / "experiment" / f"{budget}_{m}.yaml").read_text()
        defaults = text.split("defaults:\n")[1].splitlines()[:2]
        assert defaults == [f"  - /experiment/{budget}", f"  - override /model: {m}"], m
    # a GRU preset is the budget with model=gru, nothing more
    assert _compose(f"{budget}_gru") == _compose(budget, "model=gru")


@pytest.mark.parametrize("task", LRA_TASKS)
def test_surnn_presets_share_the_gru_budget_and_set_the_papers_gate(task):
    su, gru = _compose(f"lra/{task}_surnn"), _compose(f"lra/{task}_gru")
    for key in ("max_steps", "batch_size", "warmup_steps", "eval_every"):
        assert su.trainer[key] == gru.trainer[key], key
    for key in ("d_model", "n_layers", "ffn_mult", "dropout", "pool"):
        assert su.model[key] == gru.model[key], key
    assert su.optim == gru.optim and su.task == gru.task
    gate = su.model.options.gate
    assert gate.kind == "rhythm" and gate.target_rate == 0.17 and gate.rate_control == "bias"
    assert gate.period_max == LENGTH[task]  # the slowest rhythm spans the sequence
    assert gate.surrogate == "ste"  # the paper's; the file says so
    assert "surrogate ste" in (CONFIG_DIR / "experiment" / "lra" / f"{task}_surnn.yaml").read_text()


@pytest.mark.parametrize("task", ("smnist", "psmnist", "scifar"))
def test_pixel_presets_share_one_budget_per_task(task):
    cfgs = [_compose(f"pixel/{task}_{m}") for m in MODELS]
    for c in cfgs:
        assert c.task.name == task
        assert (c.trainer.max_steps, c.trainer.batch_size) == (
            cfgs[0].trainer.max_steps,
            cfgs[0].trainer.batch_size,
        )
        assert (c.model.d_model, c.model.n_layers) == (
            cfgs[0].model.d_model,
            cfgs[0].model.n_layers,
        )
    assert cfgs[-1].model.options.gate.period_max == LENGTH[task]


@pytest.mark.parametrize("exp", EXPERIMENTS + PIXEL + MINI)
def test_lra_experiment_composes_and_builds(exp):
    text = (CONFIG_DIR / "experiment" / f"{exp}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert "Source:" in text or "HARNESS CHOICE" in text  # every setting says where it is from
    assert not exp.startswith("mini/") or "MINI SCALE" in text
    task, model = exp.split("/")[1].split("_")
    cfg = _compose(exp)
    assert cfg.task.name == task and cfg.model.name == model
    mcfg = checked(BackboneConfig, cfg.model, "model")
    tcfg = checked(TrainerConfig, cfg.trainer, "trainer")
    ocfg = checked(OptimConfig, cfg.optim, "optim")
    assert tcfg.max_steps > tcfg.eval_every > 0 and 0 < ocfg.lr < 0.1
    values = OmegaConf.select(cfg, "task.options.input") == "values" or task == "scifar"
    standin = SimpleNamespace(
        n_classes=2,
        input_kind="values" if values else "tokens",
        vocab_size=None if values else 257,
        input_dim=(3 if task == "scifar" else 1) if values else None,
        max_len=LENGTH[task],
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
    x = torch.rand(2, L, standin.input_dim) if values else torch.randint(1, 257, (2, L))
    batch = {"x": x, "lengths": torch.tensor([L, 9])}
    if standin.dual:
        batch |= {"x2": x.flip(1), "lengths2": torch.tensor([5, L])}
    logits, _ = net(batch)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_transformer_presets_follow_the_lra_repositorys_current_configs():
    """google-research/long-range-arena at cd31e5c: cifar10/transformer_base.py (emb 128,
    8 heads, qkv 64, mlp 128), pathfinder32/transformer_base.py (4 layers, emb 32, 4 heads,
    qkv 16, mlp 32), base_listops_config.py (4 layers, emb 512, 8 heads, qkv 512, mlp 1024)."""
    want = {
        "image": (1, 128, 8, 64, 128),
        "pathfinder": (4, 32, 4, 16, 32),
        "listops": (4, 512, 8, 512, 1024),
    }
    for task, (layers, emb, heads, qkv, mlp) in want.items():
        cfg = _compose(f"lra/{task}_transformer")
        m = cfg.model
        assert (m.n_layers, m.d_model, m.options.n_heads, m.options.qkv_dim) == (
            layers,
            emb,
            heads,
            qkv,
        ), task
        assert m.ffn_mult * m.d_model == mlp, task
        assert (
            "cd31e5c"
            in (CONFIG_DIR / "experiment" / "lra" / f"{task}_transformer.yaml").read_text()
        )


@pytest.mark.parametrize("task", LRA_TASKS)
def test_s4d_presets_match_the_s4_repositorys_optimizer_and_clipping(task):
    cfg = _compose(f"lra/{task}_s4d")
    assert list(cfg.optim.betas) == [0.9, 0.999] and cfg.trainer.clip_grad is None
