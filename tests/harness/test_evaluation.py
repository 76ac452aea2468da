"""surnn/harness/evaluation.py: every example of a split scored once, the objective's
torchmetrics metrics and the per-layer rates (weighted by valid tokens) equal to a direct
computation over the examples, a memory task's gate statistics, FLOPs per sequence, and two
DDP processes (gloo) giving the numbers of one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from surnn.harness.config import TrainerConfig
from surnn.harness.evaluation import Evaluator, floats
from surnn.harness.objectives import IGNORE_INDEX, Classify, LanguageModel, Regress, Tokens
from surnn.harness.preemption import StopSignals
from tests.fixtures import ToyTask


class Scorer(torch.nn.Module):
    """A model whose outputs are fixed functions of each sequence's tokens: logits from the
    tokens of each class (ToyTask's class c draws tokens c+1, c+4, c+7): the first token
    votes, jittered; as rates, the batch's mean token / 10 and mean (length / 12) over its
    tokens (so a split's token-weighted rate is the mean over all its valid tokens, however
    the examples are batched)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, batch):
        x, lengths = batch["x"], batch["lengths"]
        valid = torch.arange(x.shape[1])[None] < lengths[:, None]
        first = valid & (torch.arange(x.shape[1])[None] < 1)
        votes = torch.stack([(((x - 1) % 3 == c) & first).sum(1) for c in range(3)], -1)
        jitter = 1.5 * torch.sin((x * valid).sum(1, keepdim=True) + torch.arange(3.0))
        logits = self.scale * votes.float() + jitter
        n = valid.sum()
        aux = {
            "layer0/update_rate": (x * valid).sum() / n / 10,
            "layer0/active_rate": (lengths.float() ** 2).sum() / n / 144,
        }
        return logits, aux


def evaluator(task, rank=0, world=1, **tkw) -> Evaluator:
    tcfg = TrainerConfig(batch_size=8, num_workers=0, progress=False, **tkw)
    signals = StopSignals(interrupts=world == 1, on_first=lambda signum: None)
    return Evaluator(
        task,
        task.splits(),
        tcfg,
        Classify(task.n_classes),
        torch.device("cpu"),
        8,
        signals,
        rank=rank,
        world=world,
    )


def direct(task, split: str, n: int | None = None) -> dict[str, float]:
    """The numbers computed one example at a time."""
    s = task.splits()
    ds = getattr(s, split)
    model = Scorer()
    logits, ys, tokens = [], [], []
    with torch.no_grad():
        for i in range(n or len(ds)):
            b = s.collate([ds[i]])
            out, aux = model(b)
            logits.append(out[0])
            ys.append(int(b["y"][0]))
            tokens += b["x"][0, : int(b["lengths"][0])].tolist()
    logits, y = torch.stack(logits), torch.tensor(ys)
    return {
        "acc": float((logits.argmax(-1) == y).double().mean()),
        "loss": float(F.cross_entropy(logits, y)),
        "n": len(ys),
        "majority": max(ys.count(c) for c in range(3)) / len(ys),
        "layer0/update_rate": sum(tokens) / len(tokens) / 10,
    }


def test_a_split_scores_every_example_once_as_one_at_a_time(toy_task):
    res = evaluator(toy_task).evaluate("test", Scorer(), carry=False)  # 31: a partial batch
    ref = direct(toy_task, "test")
    assert res["test/n"] == ref["n"] == 31
    assert 0.3 < res["test/acc"] < 1.0  # neither trivial nor perfect
    for k in ("acc", "majority"):
        assert res[f"test/{k}"] == ref[k], k
    assert res["test/loss"] == pytest.approx(ref["loss"], rel=1e-6)
    # each batch reports a float32 mean; their token-weighted mean is the split's
    assert res["test/layer0/update_rate"] == pytest.approx(ref["layer0/update_rate"], rel=1e-6)
    assert "test/layer0/active_rate" in res and not any("aux" in k for k in res)


def test_max_eval_examples_scores_the_first_ones_and_says_so(toy_task, caplog):
    res = evaluator(toy_task, max_eval_examples=10).evaluate("val", Scorer(), carry=False)
    ref = direct(toy_task, "val", n=10)
    assert res["val/n"] == 10 and res["val/acc"] == ref["acc"]
    assert any("evaluating the first 10 of 30" in r.getMessage() for r in caplog.records)


def test_a_memory_tasks_gate_statistics_join_the_metrics(toy_task):
    class WithGates(Scorer):
        def gate_stats(self, max_len, windows):
            assert (max_len, windows) == (12, {"input": (0, 2)})
            return {"layer0/holders": 5.0, "layer0/late_holders": 2.0}

    res = evaluator(toy_task).evaluate("val", WithGates(), carry=False)
    assert "val/layer0/holders" not in res  # a task without memory windows: none
    toy_task.memory_windows = {"input": (0, 2)}
    res = evaluator(toy_task).evaluate("val", WithGates(), carry=False)
    assert res["val/layer0/holders"] == 5.0 and res["val/layer0/late_holders"] == 2.0


def test_a_signal_while_fetching_a_batch_stops_the_evaluation_after_the_fetch(
    toy_task, monkeypatch
):
    """The evaluation's loop fetches through ``StopSignals.fetch``: a stop signal arriving
    inside the loader (where its workers fork) never unwinds through it."""
    import signal

    from surnn.harness.preemption import STOP_SIGNALS, Preempted

    ev = evaluator(toy_task)
    real, finished = ev.batches, []

    def batches(split, ds):
        for i, b in enumerate(real(split, ds)):
            if i == 1:
                signal.raise_signal(signal.SIGUSR1)
            finished.append(i)
            yield b

    monkeypatch.setattr(ev, "batches", batches)
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    ev.signals.install()
    try:
        with pytest.raises(Preempted):
            ev.evaluate("val", Scorer(), carry=False)
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    assert finished == [0, 1] and ev.signals.signum == signal.SIGUSR1


def test_flops_per_sequence_over_the_validation_set(toy_task):
    model = torch.nn.Sequential()  # count_flops' contract, measured on a real model elsewhere
    calls = []

    def count(m, batch):
        calls.append(len(batch["x"]))
        n = float(len(batch["x"]))
        return {"executed": n, "dense": 2 * n, "mixer_executed": 0.0, "mixer_dense": n}

    import surnn.harness.evaluation as evaluation

    real, evaluation.count_flops = evaluation.count_flops, count
    try:
        f = evaluator(toy_task).flops(model)
    finally:
        evaluation.count_flops = real
    assert calls == [8, 8, 8, 6] and f["flops_examples"] == 30
    assert (f["flops_per_seq"], f["flops_per_seq_dense"], f["mixer_flops_per_seq_dense"]) == (
        1.0,
        2.0,
        1.0,
    )


def test_floats_reads_a_dict_of_tensors_at_once():
    assert floats({}) == {}
    assert floats({"a": torch.tensor(0.5), "b": 2, "c": torch.tensor(3, dtype=torch.int64)}) == {
        "a": 0.5,
        "b": 2.0,
        "c": 3.0,
    }


# ------------------------------------------------------------------ DDP


def _batches(objective: str, seed: int = 0) -> list:
    """Six (outputs, targets) batches of an objective, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(6):
        n = 3 + b
        if objective == "tokens":
            y = torch.randint(0, 5, (n, 20), generator=g)
            y[torch.rand(n, 20, generator=g) < 0.6] = IGNORE_INDEX
            out.append((torch.randn(n, 20, 5, generator=g), y))
        elif objective == "lm":
            y = torch.randint(0, 5, (n, 10), generator=g)
            k = y.numel()
            nll = torch.rand(k, generator=g) * 4
            out.append(({"nll": nll, "pred": torch.randint(0, 5, (k,), generator=g)}, y))
        else:
            out.append((torch.randn(n, generator=g), torch.randn(n, generator=g)))
    return out


OBJECTIVES = {"tokens": lambda: Tokens(5), "lm": lambda: LanguageModel(5), "regress": Regress}


def _scores(rank: int, world: int) -> dict:
    """Each objective's metrics over this rank's share of the batches, and the toy task's
    evaluation (classify, rates) over this rank's share of its test split."""
    out = {}
    for name, make in OBJECTIVES.items():
        obj = make()
        metrics = obj.metrics()
        for out_b, y in _batches(name)[rank::world]:
            obj.update(metrics, out_b, y)
        out[name] = obj.compute(metrics)
    out["evaluation"] = evaluator(ToyTask(), rank, world).evaluate("test", Scorer(), False)
    return out


def test_two_ddp_processes_give_the_numbers_of_one(ranks):
    """torchmetrics sums every rank's states when a metric is computed: every rank ends
    with the numbers one process computes over all the examples (counts and accuracies
    exactly; sums of float32 values to float64 rounding, or float32's where a rank's batches
    hold other examples than one process's)."""
    one = _scores(0, 1)
    assert one["tokens"]["acc_pos3"] > 0 and one["lm"]["ppl"] > 1
    two = ranks(_scores, 2)
    for r in two:
        assert r.keys() == one.keys()
        for name, ref in one.items():
            assert r[name].keys() == ref.keys(), name
            tol = 1e-6 if name == "evaluation" else 1e-12
            for k, v in ref.items():
                if isinstance(v, int) or k.endswith(("acc", "majority")) or "acc_pos" in k:
                    assert r[name][k] == v, (name, k)
                else:
                    assert math.isclose(r[name][k], v, rel_tol=tol), (name, k, r[name][k], v)


# ------------------------------------------------------------------ the hand sums they replace


def hand_sums(name: str, batches: list, n_classes: int, n_pos: int = 32) -> dict:
    """The harness's evaluation sums before torchmetrics, verbatim: float64 sums over the
    batches, then the ratios in Python floats. The oracle the metrics must equal exactly."""
    s: dict[str, torch.Tensor] = {}

    def add(k, v):
        s[k] = s.get(k, torch.zeros((), dtype=torch.float64)) + v

    for out, y in batches:
        if name == "classify":
            logits = out.float()
            add("loss", F.cross_entropy(logits, y, reduction="sum").double())
            add("n", len(y))
            add("correct", (logits.argmax(-1) == y).sum().double())
            add("hist", torch.bincount(y, minlength=n_classes).double())
        elif name == "tokens":
            keep = y != IGNORE_INDEX
            logits = out.float()
            right = (logits.argmax(-1) == y) & keep
            ce = F.cross_entropy(
                logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            add("loss", ce.double())
            add("n", keep.sum().double())
            add("correct", right.sum().double())
            has = keep.any(1)
            add("seqs", has.sum().double())
            add("seqs_right", (has & ((right | ~keep).all(1))).sum().double())
            rank = keep.long().cumsum(1) - 1
            first = keep & (rank < n_pos)
            k = rank[first]
            add("pos_n", torch.bincount(k, minlength=n_pos).double())
            add("pos_right", torch.bincount(k, weights=right[first].double(), minlength=n_pos))
        elif name == "lm":
            t = y[y != IGNORE_INDEX]
            add("loss", out["nll"].double().sum())
            add("n", len(t))
            add("correct", (out["pred"] == t).sum().double())
        else:
            yf = y.float()
            add("sse", ((out.float() - yf) ** 2).sum().double())
            add("n", yf.numel())
            add("y_sum", yf.sum().double())
            add("y_sq", (yf.double() ** 2).sum())
    n = max(float(s["n"]), 1.0)
    if name == "classify":
        return {
            "acc": float(s["correct"]) / n,
            "loss": float(s["loss"]) / n,
            "n": int(s["n"]),
            "majority": float(s["hist"].max()) / n,
        }
    if name == "tokens":
        out = {
            "acc": float(s["correct"]) / n,
            "seq_acc": float(s["seqs_right"]) / max(float(s["seqs"]), 1.0),
            "loss": float(s["loss"]) / n,
            "n": int(s["seqs"]),
            "targets": int(s["n"]),
        }
        for k, (c, r) in enumerate(zip(s["pos_n"].tolist(), s["pos_right"].tolist())):
            if c:
                out[f"acc_pos{k}"] = r / c
        return out
    if name == "lm":
        loss = float(s["loss"]) / n
        return {
            "loss": loss,
            "ppl": math.exp(min(loss, 700.0)),
            "bpt": loss / math.log(2),
            "acc": float(s["correct"]) / n,
            "n": int(s["n"]),
            "targets": int(s["n"]),
        }
    mse = float(s["sse"]) / n
    var = float(s["y_sq"]) / n - (float(s["y_sum"]) / n) ** 2
    return {"mse": mse, "loss": mse, "baseline_mse": max(var, 0.0), "n": int(s["n"])}


def _classify_batches(seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    sizes = [5 + b for b in range(6)]
    return [(torch.randn(n, 4, generator=g), torch.randint(0, 4, (n,), generator=g)) for n in sizes]


@pytest.mark.parametrize("name", ["classify", "tokens", "lm", "regress"])
def test_each_objectives_metrics_equal_the_hand_sums_bit_for_bit(name):
    """Same batches, same numbers to the last bit: every key, acc_pos<k> included (the
    tokens batches leave some positions k without a target, which stay absent)."""
    make = {"classify": lambda: Classify(4), **OBJECTIVES}[name]
    batches = _classify_batches() if name == "classify" else _batches(name)
    if name == "tokens":  # longer sequences, some positions k beyond every sequence's targets
        pad = [torch.full_like(y, IGNORE_INDEX) for _, y in batches]
        batches = [
            (torch.cat([o] * 3, 1), torch.cat([y, y, p], 1)) for (o, y), p in zip(batches, pad)
        ]
    obj = make()
    metrics = obj.metrics()
    for out, y in batches:
        obj.update(metrics, out, y)
    got, ref = obj.compute(metrics), hand_sums(name, batches, 4 if name == "classify" else 5)
    assert got == ref
    assert all(type(got[k]) is type(ref[k]) for k in ref)  # ints stay ints in results.json
    if name == "tokens":
        assert {"acc_pos0", "acc_pos20"} <= got.keys() and "acc_pos31" not in got


def test_a_memory_tasks_evaluation_equals_the_hand_sums_with_its_gate_statistics():
    """A suRNN on copy memory: the evaluation's numbers (per-token, whole-sequence and
    per-position accuracy, loss, each layer's update and active rate weighted by valid
    tokens) equal the hand sums over the same batches, and the gate statistics the memory
    study reads (layer<i>/holders ...) come through unchanged."""
    from surnn.harness.backbone import Model
    from tasks.memory import CopyMemory

    task = CopyMemory(".", delay=12, n_copy=4, vocab=4, n_val=20, n_test=20)
    torch.manual_seed(0)
    model = Model(task, "surnn", {}, d_model=8, n_layers=2, dropout=0.0).eval()
    ev = Evaluator(
        task,
        task.splits(),
        TrainerConfig(batch_size=8, num_workers=0, progress=False),
        Tokens(task.n_classes),
        torch.device("cpu"),
        8,
        StopSignals(interrupts=True, on_first=lambda signum: None),
    )
    res = ev.evaluate("test", model, carry=False)
    batches, rates, tokens = [], {}, torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for batch in ev.batches("test", task.splits().test):
            out, aux = model(batch)
            batches.append((out, batch["y"]))
            n_tok = batch["lengths"].sum().double()
            tokens += n_tok
            for k, v in aux.items():
                if k.endswith(("update_rate", "active_rate")):
                    rates[k] = rates.get(k, 0.0) + v.double() * n_tok
    ref = {f"test/{k}": v for k, v in hand_sums("tokens", batches, task.n_classes).items()}
    ref.update({f"test/{k}": float(v) / max(float(tokens), 1.0) for k, v in rates.items()})
    stats = model.gate_stats(task.max_len, task.memory_windows)
    assert {"layer0/holders", "layer1/holders"} <= stats.keys()
    ref.update({f"test/{k}": v for k, v in stats.items()})
    assert "test/acc_pos3" in ref and "test/layer1/update_rate" in ref
    assert res == ref
