"""Trainer behaviour: the sampler, full-coverage eval, exact resume, NaN stop."""

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
from surnn.harness.trainer import Trainer
from tests.fixtures import ToyTask, crash_after


def make_trainer(
    tmp_path, mixer="lstm", seed=0, init_seed=None, rank=0, world=1, dropout=0.1, **tkw
):
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed if init_seed is None else init_seed)
    task = ToyTask()
    model = Model(task, mixer=mixer, mixer_options={}, d_model=16, n_layers=1, dropout=dropout)
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
        if rank == 0
        else []
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
        rank=rank,
        world=world,
    )


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
    crash_after(b, 5)  # last.pt was written at step 3
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


def _poison_weights_at(tr, step: int) -> None:
    """Make the update of ``step`` leave NaN weights behind (its loss, computed before the
    update, is finite): what a huge learning rate does."""

    def poison(optimizer, args, kwargs):
        if tr.step + 1 == step:
            with torch.no_grad():
                next(tr.model_raw.parameters()).fill_(float("nan"))

    tr.optimizer.register_step_post_hook(poison)


def test_non_finite_validation_is_never_best_nor_the_last_good_checkpoint(tmp_path):
    tr = make_trainer(tmp_path, max_steps=6)  # validation and last.pt at steps 3 and 6
    _poison_weights_at(tr, 6)
    with pytest.raises(
        TrainingError,
        match=r"validation loss \(nan\) at step 6.*best\.pt stays at "
        r"step 3.*last\.pt \(step 3\)",
    ):
        tr.fit()
    assert tr.best["step"] == 3 and math.isfinite(tr.best["val_loss"])
    for name in ("best.pt", "last.pt"):
        saved = torch.load(tmp_path / "checkpoints" / name, weights_only=False)
        assert saved["step"] == 3, name
        assert all(torch.isfinite(v).all() for v in saved["model"].values()), name


def test_non_finite_weights_are_never_saved_as_last_pt(tmp_path):
    tr = make_trainer(tmp_path, max_steps=6, ckpt_every=2)  # validation at 3, last.pt at 2, 4
    _poison_weights_at(tr, 4)
    with pytest.raises(TrainingError, match=r"non-finite at step 4.*last\.pt \(step 2\)"):
        tr.fit()
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert saved["step"] == 2


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


def test_non_finite_hint_does_not_suggest_clip_grad_when_set(tmp_path):
    for clip, want in ((1.0, "trainer.clip_grad (now 1.0)"), (None, "set trainer.clip_grad")):
        tr = make_trainer(tmp_path / str(clip), max_steps=3, clip_grad=clip)
        orig = tr._forward

        def poisoned(batch, orig=orig):
            logits, loss, total, aux = orig(batch)
            return logits, loss * float("nan"), total * float("nan"), aux

        tr._forward = poisoned
        with pytest.raises(TrainingError) as e:
            tr.fit()
        assert want in str(e.value), str(e.value)


def test_sigterm_inside_a_long_step_stops_at_once_and_resumes_exactly(tmp_path):
    """A stop signal in the middle of a step abandons it (the optimizer has not touched
    the weights) and saves last.pt as of its start, instead of waiting for the step to
    end (16 s on the main CPU job); the resumed run equals an uninterrupted one."""
    import os
    import signal
    import time

    a = make_trainer(tmp_path / "a")
    a.fit()
    ref = a.test()

    b = make_trainer(tmp_path / "b")
    orig = b._forward
    seen = {}

    def slow_forward(batch):
        out = orig(batch)
        if b.step == 4 and "t" not in seen:  # inside step 5, after its forward pass
            seen["t"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # a long step: the handler must not wait for its end
            seen["slept"] = True
        return out

    b._forward = slow_forward
    handled = []
    prev = signal.signal(signal.SIGTERM, lambda s, f: handled.append(s))
    try:
        with pytest.raises(SystemExit):
            b.fit()
    finally:
        signal.signal(signal.SIGTERM, prev)
    assert time.perf_counter() - seen["t"] < 2.0 and "slept" not in seen
    assert handled == [signal.SIGTERM]  # handed on to the previous handler (submitit's)
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)
    assert saved["step"] == 4 and saved["batches_done"] == 4

    c = make_trainer(tmp_path / "b", init_seed=99)
    c.fit()
    assert c.step == a.step == 8 and c.best == a.best
    assert c.test()["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-6, abs=1e-9)
    for pa, pc in zip(a.model_raw.parameters(), c.model_raw.parameters()):
        torch.testing.assert_close(pa, pc, rtol=1e-6, atol=1e-7)
    assert c.running == pytest.approx(a.running)  # the progress bar's averages resume too


def test_training_is_deterministic_on_cpu(tmp_path):
    """Same commit, seed and thread count: bit-identical weights and metrics."""
    runs = []
    for name in ("a", "b"):
        tr = make_trainer(tmp_path / name)
        tr.fit()
        lines = [
            json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        ]
        for rec in lines:
            for k in [k for k in rec if k.startswith("sys/") or k == "step_time_s"]:
                del rec[k]
        runs.append((tr, lines))
    (a, la), (b, lb) = runs
    assert la == lb
    for pa, pb in zip(a.model_raw.parameters(), b.model_raw.parameters()):
        assert torch.equal(pa, pb)


def test_long_cpu_run_warns_after_the_first_step(tmp_path, caplog):
    tr = make_trainer(tmp_path, max_steps=10**8)
    crash_after(tr, 1)
    with (
        caplog.at_level("WARNING", logger="surnn.harness.trainer"),
        pytest.raises(KeyboardInterrupt),
    ):
        tr.fit()
    assert any("more hours on CPU" in r.getMessage() for r in caplog.records)


def _ddp_rank(rank: int, world: int, tmp: str, max_steps: int) -> dict:
    """One rank of a 2-process gloo run of the toy trainer (run by the test below).
    Rank 0 writes best.pt a second late: a rank that read best.pt itself would test the
    previous best weights."""
    import hashlib
    import time
    from pathlib import Path

    from surnn.harness import checkpoint

    save = checkpoint.save

    def late_best(path, payload):
        if Path(path).name == "best.pt":
            time.sleep(1.0)
        save(path, payload)

    checkpoint.save = late_best  # this process only: the ranks are forked
    tr = make_trainer(Path(tmp) / "ddp", rank=rank, world=world, dropout=0.0, max_steps=max_steps)
    tr.fit()
    res = tr.test()
    weights = hashlib.sha1(
        b"".join(p.detach().numpy().tobytes() for p in tr.model_raw.parameters())
    ).hexdigest()
    return {"test": res, "best": tr.best, "weights": weights}


@pytest.mark.parametrize("max_steps,best", [(8, 8), (10, 6)])
def test_ddp_tests_the_best_weights_of_rank_0_and_matches_one_process(
    tmp_path, ranks, max_steps, best
):
    """2-process DDP (gloo) against one process on the same data and global batch: the
    same best step and test accuracy, and every rank tests rank 0's best weights, whether
    the best is the last validation (rank 0 writes best.pt late: the case that raced) or an
    earlier one (a rank that kept its own last weights would test others);
    train/loss is the mean over the whole batch.

    The ranks are forked (the ``ranks`` fixture), as the other DDP tests' are: a spawned
    rank ends in a full interpreter shutdown, where gloo's threads aborted one CI run in
    many with SIGABRT after the rank's work was done."""
    torch.set_num_threads(1)
    one = make_trainer(tmp_path / "one", dropout=0.0, max_steps=max_steps)
    one.fit()
    ref = one.test()
    assert one.best["step"] == best
    got = ranks(_ddp_rank, 2, str(tmp_path), max_steps)
    assert got[0]["weights"] == got[1]["weights"]
    for r in got:
        assert r["best"]["step"] == one.best["step"]
        assert r["test"]["test/acc"] == ref["test/acc"] and r["test"]["test/n"] == 31
        assert r["test"]["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-5)
    lines = [json.loads(l) for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    ddp = [json.loads(l) for l in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    one_loss = [r["train/loss"] for r in lines if "train/loss" in r]
    ddp_loss = [r["train/loss"] for r in ddp if "train/loss" in r]
    assert ddp_loss == pytest.approx(one_loss, rel=1e-5)
