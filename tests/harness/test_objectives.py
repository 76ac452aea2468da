"""Per-position objectives: metrics against hand computations, per-position heads, causal
check for language modelling, state carried across windows (mixers, evaluation), stream
windows, fresh examples per step, hybrid stacks with per-layer FLOPs and rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from surnn.errors import ConfigError
from surnn.harness.backbone import Model
from surnn.harness.config import OptimConfig, TrainerConfig
from surnn.harness.data import SequentialBatchSampler, StreamWindows
from surnn.harness.loggers import Loggers
from surnn.harness.objectives import IGNORE_INDEX, LanguageModel, Regress, Tokens
from surnn.harness.registry import MIXERS
from surnn.harness.trainer import Trainer
from tasks.base import Splits
from tasks.memory import CopyMemory, SelectiveCopy
from tests.fixtures import crash_after, standin

# ------------------------------------------------------------------ metrics


def test_token_metrics_per_token_and_whole_sequence():
    obj = Tokens(3)
    y = torch.tensor([[IGNORE_INDEX, 0, 1], [2, IGNORE_INDEX, 0], [IGNORE_INDEX] * 3])
    pred = torch.tensor([[2, 0, 1], [2, 1, 1], [0, 0, 0]])  # row 0 right, row 1 one wrong
    logits = torch.nn.functional.one_hot(pred, 3).float() * 5
    s = obj.metrics()
    obj.update(s, logits, y)
    m = obj.compute(s)
    assert m["acc"] == pytest.approx(3 / 4)  # 4 scored targets, 3 right
    assert m["seq_acc"] == pytest.approx(1 / 2)  # the row without targets does not count
    keep = y != IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert m["loss"] == pytest.approx(float(ref), rel=1e-6)
    assert obj.loss(logits, y).item() == pytest.approx(float(ref), rel=1e-6)
    # the k-th target of each sequence: k=0 is row 0's 0 (right) and row 1's 2 (right);
    # k=1 is row 0's 1 (right) and row 1's 0 (wrong)
    assert (m["acc_pos0"], m["acc_pos1"]) == (1.0, 0.5) and "acc_pos2" not in m


def test_token_accuracy_by_position_matches_a_direct_count():
    torch.manual_seed(0)
    obj, B, L, C = Tokens(5), 40, 30, 5
    y = torch.randint(0, C, (B, L))
    y[torch.rand(B, L) < 0.6] = IGNORE_INDEX
    logits = torch.randn(B, L, C)
    s = obj.metrics()
    for rows in (slice(0, 17), slice(17, B)):  # sums over batches
        obj.update(s, logits[rows], y[rows])
    m = obj.compute(s)
    right = logits.argmax(-1) == y
    for k in range(obj.N_POS):
        hits = [
            bool(right[b, (y[b] != IGNORE_INDEX).nonzero()[k]])
            for b in range(B)
            if (y[b] != IGNORE_INDEX).sum() > k
        ]
        if hits:
            assert m[f"acc_pos{k}"] == pytest.approx(sum(hits) / len(hits))
        else:
            assert f"acc_pos{k}" not in m


@pytest.mark.parametrize("cutoffs", [None, [3, 6]])
def test_lm_loss_perplexity_bits(cutoffs):
    torch.manual_seed(0)
    obj = LanguageModel(10, cutoffs)
    head = obj.head(8)
    assert isinstance(head, torch.nn.AdaptiveLogSoftmaxWithLoss) == bool(cutoffs)
    h = torch.randn(2, 5, 8)
    y = torch.randint(0, 10, (2, 5))
    y[1, 3:] = IGNORE_INDEX
    with torch.no_grad():
        out = obj.outputs(head, h, y)
        keep = y != IGNORE_INDEX
        if cutoffs:
            logp = head.log_prob(h[keep])
        else:
            logp = torch.log_softmax(head(h[keep]), -1)
        nll = -logp.gather(1, y[keep][:, None]).squeeze(1)
        assert torch.allclose(out["nll"], nll, atol=1e-5)
        assert torch.equal(out["pred"], logp.argmax(-1))
    s = obj.metrics()
    obj.update(s, out, y)
    m = obj.compute(s)
    loss = float(nll.mean())
    assert m["loss"] == pytest.approx(loss, rel=1e-5) and m["targets"] == 8
    assert m["ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert m["bpt"] == pytest.approx(loss / math.log(2), rel=1e-5)
    assert not obj.higher_is_better and obj.better(1.0, 2.0) and obj.better(3.0, None)


def test_regression_mse_and_its_baseline():
    obj = Regress()
    y = torch.tensor([1.0, 0.5, 1.5])
    out = torch.tensor([1.0, 1.0, 1.0])
    s = obj.metrics()
    obj.update(s, out, y)
    m = obj.compute(s)
    assert m["mse"] == pytest.approx((0 + 0.25 + 0.25) / 3)
    assert m["baseline_mse"] == pytest.approx(float(y.var(unbiased=False)))


# ------------------------------------------------------------------ backbone


@pytest.mark.parametrize("mixer", ["surnn", "lstm", "s4d", "transformer"])
def test_per_position_outputs_and_heads(mixer):
    torch.manual_seed(0)
    task = SelectiveCopy(".", length=20, n_tokens=3, vocab=4)
    s = task.splits()
    b = s.collate([s.val[i] for i in range(2)])
    m = Model(task, mixer, {}, d_model=8, n_layers=1).eval()
    out, _ = m(b)
    assert out.shape == (2, 23, 4)
    reg = Model(
        standin("regress", input_kind="values", input_dim=2), mixer, {}, d_model=8, n_layers=1
    ).eval()
    x = torch.randn(3, 11, 2)
    lengths = torch.tensor([11, 6, 3])
    pred, _ = reg({"x": x, "lengths": lengths})
    assert pred.shape == (3,)
    # read at the last valid position: changing what follows it changes nothing
    x2 = x.clone()
    x2[1, 6:] = 5.0
    if mixer != "transformer":  # attention without a causal mask sees later (padded) keys
        assert torch.allclose(reg({"x": x2, "lengths": lengths})[0], pred, atol=1e-5)


@pytest.mark.parametrize(
    "mixer, options, fix",
    [
        ("transformer", {"causal": False}, "model.options.causal=true"),
        ("lstm", {"bidirectional": True}, "bidirectional=false"),
        ("s4d", {"bidirectional": True}, "bidirectional=false"),
    ],
)
def test_language_modelling_rejects_non_causal_mixers_in_one_line(mixer, options, fix):
    with pytest.raises(ConfigError) as e:
        Model(standin("lm"), mixer, options, d_model=8, n_layers=1)
    assert "\n" not in str(e.value) and "causal" in str(e.value) and fix in str(e.value)


def test_transformer_causal_null_is_causal_for_lm_only():
    lm = Model(standin("lm"), "transformer", {"causal": None}, d_model=8, n_layers=1)
    cl = Model(standin("classify"), "transformer", {"causal": None}, d_model=8, n_layers=1)
    assert lm.encoder.blocks[0].mixer.causal and not cl.encoder.blocks[0].mixer.causal


# ------------------------------------------------------------------ state across windows


@pytest.mark.parametrize("mixer", ["surnn", "gru", "lstm"])
def test_two_windows_with_the_state_carried_equal_one_pass(mixer):
    torch.manual_seed(0)
    opts = (
        {"gate": {"kind": "rhythm", "period_min": 2, "period_max": 16}} if mixer == "surnn" else {}
    )
    m = MIXERS.get(mixer)(8, **opts).eval()
    assert m.stateful
    x = torch.randn(3, 30, 8)
    full, _ = m(x, torch.full((3,), 30))
    y1, _, s = m.forward_state(x[:, :17], torch.full((3,), 17), None)
    y2, _, s = m.forward_state(x[:, 17:], torch.full((3,), 13), s)
    assert torch.allclose(torch.cat([y1, y2], 1), full, atol=1e-5)
    if mixer == "surnn":
        assert s["t"].tolist() == [30, 30, 30]
        # without the clock running on, the second window would use the gate of t = 0..12
        g_full = m.rnn.gates[0](30)[0]
        g_late = m.rnn.gates[0](13, t0=17)[0]
        assert torch.equal(g_full[17:], g_late)
    assert not MIXERS.get("s4d")(8).stateful and not MIXERS.get("transformer")(8).stateful
    assert not MIXERS.get("lstm")(8, bidirectional=True).stateful


def test_stream_windows_cover_every_target_once_and_rows_continue():
    tokens = np.arange(1, 104)  # 103 tokens, 102 predictions
    w = StreamWindows(tokens, rows=4, window=10, full_only=False)
    seen, prev = [], {}
    for j in range(w.n_windows):
        b = w.batch(j)
        for i, r in enumerate(b["rows"].tolist()):
            n = int(b["lengths"][i])
            assert (b["y"][i, :n] == b["x"][i, :n]).all()  # target = next id - 1 = this id
            seen += b["x"][i, :n].tolist()
            if j:
                assert b["x"][i, 0] == prev[r] + 1  # the row continues the last window
            prev[r] = int(b["x"][i, n - 1])
    assert sorted(seen) == list(range(1, 103))
    t = StreamWindows(tokens, rows=4, window=10, full_only=True)
    assert t.n_windows == 2 and (t.batch(1)["lengths"] == 10).all()


class _Stream:
    stream = True

    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)


def _lm_trainer(tmp_path, mixer, window, rows=2, **task_kw):
    rng = np.random.default_rng(0)
    toks = (np.arange(400) % 5 + 1 + (rng.random(400) < 0.1)).astype(np.int64)
    task = standin("lm", n_classes=6, vocab_size=7, max_len=window, **task_kw)
    splits = Splits(_Stream(toks), _Stream(toks[:121]), _Stream(toks[:121]), None)
    torch.manual_seed(0)
    model = Model(task, mixer, {}, d_model=8, n_layers=2, dropout=0.0)
    tcfg = TrainerConfig(
        max_steps=6,
        batch_size=rows,
        eval_batch_size=rows,
        warmup_steps=1,
        eval_every=3,
        ckpt_every=3,
        num_workers=0,
        progress=False,
    )
    tr = Trainer(
        model, task, splits, tcfg, OptimConfig(lr=3e-3), tmp_path, Loggers([]), torch.device("cpu")
    )
    return tr, model, task


@pytest.mark.parametrize("mixer", ["gru", "surnn"])
def test_stream_evaluation_carries_the_state(tmp_path, mixer):
    """Windows of 7 with the state carried score like one pass over the whole stream."""
    tr, model, task = _lm_trainer(tmp_path / "a", mixer, window=7, rows=1)
    assert tr.carry
    short = tr.evaluate("val")
    task.max_len = 200
    long = tr.evaluate("val")
    assert short["val/targets"] == long["val/targets"] == 120
    assert short["val/loss"] == pytest.approx(long["val/loss"], rel=1e-4)
    tr.carry = False  # windows from a zero state: a different (worse-informed) score
    task.max_len = 7
    assert tr.evaluate("val")["val/loss"] != pytest.approx(long["val/loss"], rel=1e-4)


def test_lm_training_runs_and_selects_by_loss(tmp_path):
    tr, model, task = _lm_trainer(tmp_path, "lstm", window=8)
    tr.fit()
    assert tr.best["metric"] == "loss" and tr.best["step"] in (3, 6)
    assert set(tr.carried) == {0} and tr.carried[0][0]["h"].shape == (2, 8)
    res = tr.test()
    assert {"test/loss", "test/ppl", "test/bpt", "test/acc"} <= set(res)
    assert tr.flops()["flops_per_layer"].keys() == {"layer0", "layer1"}


def test_lm_with_a_stateless_mixer_reads_windows_from_zero_unless_asked(tmp_path):
    tr, _, _ = _lm_trainer(tmp_path / "a", "s4d", window=8)
    assert not tr.carry
    with pytest.raises(ConfigError, match="carry_state=true.*s4d"):
        _lm_trainer(tmp_path / "b", "s4d", window=8, carry_state=True)


def test_sequential_sampler_reads_fresh_examples_and_resumes():
    full = iter(SequentialBatchSampler(10**9, 4))
    seq = [next(full) for _ in range(5)]
    assert seq[2] == [8, 9, 10, 11]
    again = iter(SequentialBatchSampler(10**9, 4, start=2))
    assert next(again) == seq[2]
    r1 = iter(SequentialBatchSampler(10**9, 4, start=1, rank=1, world=2))
    assert next(r1) == [5, 7]


def test_training_on_fresh_examples_uses_the_step(tmp_path):
    task = CopyMemory(".", delay=5, n_copy=3, vocab=4, n_val=8, n_test=8)
    torch.manual_seed(0)
    model = Model(task, "gru", {}, d_model=8, n_layers=1, dropout=0.0)
    tcfg = TrainerConfig(
        max_steps=3, batch_size=4, warmup_steps=1, eval_every=3, num_workers=0, progress=False
    )
    tr = Trainer(
        model, task, task.splits(), tcfg, OptimConfig(), tmp_path, Loggers([]), torch.device("cpu")
    )
    tr.batches_done = 2
    b = next(tr._train_batches())
    ref = task.splits().collate([task.splits().train[i] for i in range(8, 12)])
    assert torch.equal(b["x"], ref["x"]) and torch.equal(b["y"], ref["y"])
    tr.batches_done = 0
    tr.fit()
    assert tr.best["metric"] == "acc" and 0.0 <= tr.best["value"] <= 1.0


# ------------------------------------------------------------------ hybrid


def test_hybrid_mixes_kinds_by_layer_with_per_layer_flops_and_rates(tmp_path):
    task = CopyMemory(".", delay=20, n_copy=3, vocab=4, n_val=4, n_test=4)
    opts = {
        "layers": ["surnn", "s4d"],
        "surnn": {"gate": {"init_rate": 0.3}},
        "s4d": {"d_state": 8},
    }
    torch.manual_seed(0)
    m = Model(task, "hybrid", opts, d_model=8, n_layers=4)
    assert m.layer_kinds == ["surnn", "s4d", "surnn", "s4d"]
    assert m.encoder.blocks[1].mixer.ssm.N2 == 4
    three = Model(task, "hybrid", opts, d_model=8, n_layers=3)  # rounded up to whole repeats
    assert three.layer_kinds == ["surnn", "s4d", "surnn", "s4d"]
    tcfg = TrainerConfig(
        max_steps=1, batch_size=4, warmup_steps=1, eval_every=1, num_workers=0, progress=False
    )
    tr = Trainer(
        m, task, task.splits(), tcfg, OptimConfig(), tmp_path, Loggers([]), torch.device("cpu")
    )
    res = tr.evaluate("val")
    assert "val/layer0/update_rate" in res and "val/layer2/update_rate" in res
    assert "val/layer1/update_rate" not in res
    f = tr.flops()
    assert f["layer_kinds"] == {
        "layer0": "surnn",
        "layer1": "s4d",
        "layer2": "surnn",
        "layer3": "s4d",
    }
    lay, dense = f["flops_per_layer"], f["flops_per_layer_dense"]
    assert lay["layer0"] < dense["layer0"]  # a gated layer skips closed updates
    assert lay["layer1"] == dense["layer1"]  # S4D has no gate
    assert sum(lay.values()) <= f["flops_per_seq"]


@pytest.mark.parametrize(
    "opts, match",
    [
        ({}, "needs model.options.layers"),
        ({"layers": ["surnn"], "surnnn": {}}, "unknown option surnnn"),
        ({"layers": ["surnn", "lstn"]}, "unknown model 'lstn'"),
    ],
)
def test_hybrid_config_errors(opts, match):
    with pytest.raises(ConfigError, match=match):
        Model(standin("classify"), "hybrid", opts, d_model=8, n_layers=4)


@pytest.mark.parametrize("mixer", ["lstm", "surnn"])
def test_stream_training_resumes_exactly_with_the_carried_state(tmp_path, mixer):
    """A crash after step 4 and a resume from last.pt (step 3, carried state inside) end
    where an uninterrupted run does (the state of step 3 is needed for step 4's window)."""
    a, _, _ = _lm_trainer(tmp_path / "a", mixer, window=8)
    a.fit()
    b, _, _ = _lm_trainer(tmp_path / "b", mixer, window=8)
    crash_after(b, 4)
    with pytest.raises(KeyboardInterrupt):
        b.fit()
    c, _, _ = _lm_trainer(tmp_path / "b", mixer, window=8)
    c.fit()
    assert c.step == a.step == 6 and c.best == a.best
    for pa, pc in zip(a.model_raw.parameters(), c.model_raw.parameters()):
        torch.testing.assert_close(pa, pc, rtol=1e-6, atol=1e-7)
