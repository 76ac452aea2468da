"""Trainer behaviour: schedule, parameter groups, full-coverage eval, exact resume, NaN stop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from surnn.errors import ConfigError, TrainingError
from surnn.harness.backbone import Model
from surnn.harness.config import BackboneConfig, OptimConfig, TrainerConfig, checked
from surnn.harness.data import ResumableBatchSampler
from surnn.harness.loggers import JsonlLog, Loggers
from surnn.harness.trainer import Trainer, param_groups, warmup_cosine
from surnn.utils import optim_hint
from tests.fixtures import ToyTask


def make_trainer(tmp_path, mixer="lstm", seed=0, init_seed=None, **tkw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed if init_seed is None else init_seed)
    task = ToyTask()
    model = Model(task, mixer=mixer, mixer_options={}, d_model=16, n_layers=1, dropout=0.1)
    tcfg = TrainerConfig(
        max_steps=tkw.pop("max_steps", 8),
        batch_size=8,
        warmup_steps=2,
        eval_every=3,
        ckpt_every=tkw.pop("ckpt_every", 3),
        log_every=1,
        num_workers=0,
        progress=False,
        **tkw,
    )
    log = Loggers(
        [
            JsonlLog(
                tmp_path / "metrics.jsonl",
                resume_step=None if not (tmp_path / "checkpoints" / "last.pt").exists() else 10**9,
            )
        ]
    )
    return Trainer(
        model,
        task,
        task.splits(),
        tcfg,
        OptimConfig(lr=3e-3),
        tmp_path,
        log,
        torch.device("cpu"),
        seed=seed,
    )


def test_warmup_cosine_shape():
    assert warmup_cosine(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_param_groups_follow_hints_and_no_decay_for_1d():
    lin = torch.nn.Linear(4, 4)
    special = optim_hint(torch.nn.Parameter(torch.zeros(3, 3)), lr=1e-4, weight_decay=0.0)
    m = torch.nn.Module()
    m.lin, m.special = lin, special
    groups = param_groups(m, OptimConfig(lr=1e-3, weight_decay=0.1))
    by = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in groups}
    assert by == {(1e-3, 0.1): 16, (1e-3, 0.0): 4, (1e-4, 0.0): 9}


def test_sampler_is_seeded_and_resumes_at_any_batch():
    full = ResumableBatchSampler(20, 4, seed=3)
    it = iter(full)
    seq = [next(it) for _ in range(12)]  # crosses two epoch boundaries
    assert sorted(sum(seq[:5], [])) == list(range(20))
    assert seq[:5] != seq[5:10]  # a new permutation each epoch
    for start in (0, 4, 7):
        it2 = iter(ResumableBatchSampler(20, 4, seed=3, start=start))
        assert [next(it2) for _ in range(12 - start)] == seq[start:]


def test_eval_covers_every_example_and_reports_prior(tmp_path):
    tr = make_trainer(tmp_path)
    res = tr.evaluate("test")  # 31 examples, micro-batch 8: a partial last batch
    assert res["test/n"] == 31
    labels = tr.splits.test.labels
    assert res["test/majority"] == pytest.approx(max((labels == c).mean() for c in range(3)))


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    a = make_trainer(tmp_path / "a")
    a.fit()
    ref = a.test()

    b = make_trainer(tmp_path / "b")
    calls = {"n": 0}
    orig = b._train_step

    def crash_after_five(it):
        if calls["n"] == 5:  # last.pt was written at step 3
            raise KeyboardInterrupt
        calls["n"] += 1
        return orig(it)

    b._train_step = crash_after_five
    with pytest.raises(KeyboardInterrupt):
        b.fit()
    c = make_trainer(tmp_path / "b", init_seed=99)  # other init: resume must overwrite it
    c.fit()
    assert c.step == a.step == 8
    out = c.test()
    assert out["test/acc"] == ref["test/acc"]
    assert out["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-6, abs=1e-9)
    assert c.best == a.best
    for pa, pc in zip(a.model_raw.parameters(), c.model_raw.parameters()):
        torch.testing.assert_close(pa, pc, rtol=1e-6, atol=1e-7)


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    tr = make_trainer(tmp_path, max_steps=6)
    orig = tr._forward

    def poisoned(batch):
        logits, loss, total, aux = orig(batch)
        if tr.step >= 4:
            loss = loss * float("nan")
            total = total * float("nan")
        return logits, loss, total, aux

    tr._forward = poisoned
    with pytest.raises(TrainingError, match=r"at step 5.*last\.pt \(step 3\)"):
        tr.fit()
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert saved["step"] == 3
    assert all(torch.isfinite(p).all() for p in tr.model_raw.parameters())


def test_metrics_jsonl_drops_lines_past_resume_step(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 7)) + '{"step": 7, "tr')
    JsonlLog(p, resume_step=4)
    assert [json.loads(l)["step"] for l in p.read_text().splitlines()] == [1, 2, 3, 4]


def test_config_schema_rejects_typos_and_bad_types():
    with pytest.raises(ConfigError, match="trainer.max_step"):
        checked(TrainerConfig, OmegaConf.create({"max_step": 5}), "trainer")
    with pytest.raises(ConfigError, match="max_steps"):
        checked(TrainerConfig, OmegaConf.create({"max_steps": "abc"}), "trainer")
    m = checked(BackboneConfig, OmegaConf.create({"name": "lstm", "d_model": 8}), "model")
    assert m.d_model == 8 and m.n_layers == 4


def test_training_learns_toy_task(tmp_path):
    tr = make_trainer(tmp_path, max_steps=60)
    tr.tcfg.eval_every = 60
    tr.fit()
    res = tr.evaluate("val")
    assert res["val/acc"] > 0.6, res  # majority class is ~1/3
    assert math.isfinite(res["val/loss"])


def test_long_cpu_run_warns_once_with_estimate_and_alternatives(tmp_path, caplog):
    tr = make_trainer(tmp_path, max_steps=10**6)
    tr.step, tr.step_times = 10, [0.5] * 10
    with caplog.at_level("WARNING", logger="surnn.harness.trainer"):
        tr._warn_if_long()
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "139 more hours on CPU" in msg and "make demo" in msg and "trainer=smoke" in msg
    caplog.clear()
    tr.tcfg.max_steps = 100  # under two hours: silent
    with caplog.at_level("WARNING", logger="surnn.harness.trainer"):
        tr._warn_if_long()
    assert not caplog.records
