"""run.py end to end, as a user runs it: a smoke run writes every result field, torchrun
(DDP on CPU) gives the single-process numbers, and the suRNN LRA preset runs. Errors:
test_run_errors.py; interruption and resume: test_run_resume.py; sweeps: test_run_sweep.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from surnn.harness.results import CLASSIFY_FIELDS, FLOPS_FIELDS, RunResult
from tests.fixtures import ROOT, TINY_RUN, run_in_tmp, run_py_env, train_here

# results.json of a classification run with FLOPs counted: these keys, in this order (the
# classification and FLOPs fields last, as results.py groups them)
RESULT_KEYS = [
    "task",
    "model",
    "seed",
    "run_id",
    "steps",
    "objective",
    "metric_name",
    "metric_higher_is_better",
    "best_val_metric",
    "best_val_loss",
    "best_step",
    "test_acc",
    "test_metrics",
    "test_loss",
    "test_examples",
    "carry_state",
    "update_rate",
    "active_rate",
    "gate_holders",
    "params",
    "train_time_s",
    "eval_time_s",
    "step_time_s",
    "tokens_per_s",
    "peak_memory_bytes",
    "peak_memory_kind",
    "device",
    "threads",
    "world_size",
    "precision",
    "kernel",
    "git_commit",
    "torch",
    "date",
    "variant",
    "command",
    "data",
    "split_sizes",
    *CLASSIFY_FIELDS,
    *FLOPS_FIELDS,
]


#: the model options of each smoke run: the suRNN run is a variant (two model.* overrides)
#: without dropout, so it is also the single-process reference of the DDP test
SMOKE = {"surnn": ["model.options.gate.init_rate=0.5", "model.dropout=0.0"], "lstm": []}


@pytest.fixture(scope="module")
def smoke(tmp):
    """smoke(model): the run folder of ``run.py task=listops model=<model> trainer=smoke``
    (SMOKE's options), run once per module."""
    done = {}

    def get(model: str) -> Path:
        if model not in done:
            args = ["task=listops", f"model={model}", "trainer=smoke", *TINY_RUN, *SMOKE[model]]
            p = run_in_tmp([*args, f"run_id=smoke-{model}"], tmp)
            assert p.returncode == 0, p.stderr[-3000:]
            done[model] = tmp / "out" / f"smoke-{model}"
        return done[model]

    return get


@pytest.mark.parametrize("model", ["surnn", "lstm"])
def test_smoke_run_writes_every_result_field(tmp, smoke, model):
    path = smoke(model) / "results.json"
    res = json.loads(path.read_text())
    assert list(res) == RESULT_KEYS
    assert RunResult.load(path).to_json() == path.read_text()  # read back, written the same
    assert res["task"] == "listops" and res["model"] == model and res["steps"] == 4
    # the variant: the model.* overrides, sorted
    assert res["variant"] == ("dropout=0.0,gate.init_rate=0.5" if model == "surnn" else None)
    assert res["test_examples"] == 21 and res["split_sizes"] == {"train": 64, "val": 20, "test": 21}
    assert res["flops_per_seq"] > 0 and res["flops_per_seq_dense"] >= res["flops_per_seq"]
    from surnn.ops import compiled

    # which implementation ran the suRNN layers (none for a baseline)
    want = "compiled" if compiled.available() else "cpu"
    assert res["kernel"] == (want if model == "surnn" else None)
    if model == "surnn":
        assert 0.0 < res["update_rate"]["layer0"] < 1.0
        # computed updates: the open ones plus those near threshold (bounded surrogate)
        assert res["update_rate"]["layer0"] <= res["active_rate"]["layer0"] <= 1.0
    lines = [
        json.loads(l)
        for l in (tmp / "out" / f"smoke-{model}" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in lines if "val/acc" in r] == [2, 4]
    assert (tmp / "out" / f"smoke-{model}" / "checkpoints" / "best.pt").exists()


def _train_losses(folder: Path) -> list[float]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(l)["train/loss"] for l in lines if "train/loss" in l]


def test_torchrun_ddp_on_cpu_gives_the_single_process_numbers(tmp, smoke):
    """DDP (2 ranks on CPU) against one process on the same data and global batch (the
    suRNN smoke run): one run folder, every test example once, the same best step and test
    accuracy, train/loss the mean over the whole batch (not rank 0's half), and the same
    per-layer update/active rates (each rank sums its share weighted by its tokens; the
    sums are reduced before dividing)."""
    env = run_py_env()
    same = ["task=listops", "model=surnn", "trainer=smoke", *TINY_RUN, *SMOKE["surnn"]]
    single = smoke("surnn")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",  # a free port: another test run on this machine may hold 29500
            str(ROOT / "run.py"),
            f"data_dir={tmp / 'data'}",
            f"output_dir={tmp / 'out'}",
            *same,
            "run_id=ddp-2",
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    ddp = json.loads((tmp / "out" / "ddp-2" / "results.json").read_text())
    ref = json.loads((single / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["test_examples"] == 21
    for key in ("update_rate", "active_rate"):
        assert ddp[key].keys() == ref[key].keys() == {"layer0"}
        for layer, v in ref[key].items():
            assert ddp[key][layer] == pytest.approx(v, abs=1e-4), (key, ddp[key], ref[key])
    assert 0.0 < ddp["update_rate"]["layer0"] < 1.0
    assert "torch.distributed.run --nproc_per_node=2" in ddp["command"], ddp["command"]
    for key in ("best_step", "best_val_acc", "test_acc", "test_examples", "steps"):
        assert ddp[key] == ref[key], (key, ddp[key], ref[key])
    assert ddp["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-6)
    one, two = _train_losses(single), _train_losses(tmp / "out" / "ddp-2")
    assert len(one) == ref["steps"] and two == pytest.approx(one, rel=1e-5)


def test_the_surnn_lra_preset_runs_a_smoke_step_and_holds_its_target_rate(tmp):
    """experiment=lra/listops_surnn (the paper's gate regime) as run.py composes and trains
    it (in this process), shrunk: the experiment's trainer keys win over trainer=smoke, so
    the step count is set here."""
    shrink = ["trainer.max_steps=3", "trainer.eval_every=3", "trainer.ckpt_every=3"]
    shrink += ["trainer.batch_size=4", "model.d_model=16", "model.n_layers=2"]
    args = ["experiment=lra/listops_surnn", "trainer=smoke", *shrink, *TINY_RUN]
    train_here([*args, f"data_dir={tmp / 'data'}"], tmp / "out", "preset")
    res = json.loads((tmp / "out" / "preset" / "results.json").read_text())
    assert res["steps"] == 3 and set(res["update_rate"]) == {"layer0", "layer1"}
    assert all(abs(r - 0.17) < 0.03 for r in res["update_rate"].values()), res["update_rate"]
    assert res["mixer_flops_per_seq"] < 0.5 * res["mixer_flops_per_seq_dense"]
    assert res["flops_examples"] == 20  # the whole validation set
