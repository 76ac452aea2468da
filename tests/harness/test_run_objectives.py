"""run.py end to end on the non-classify tasks: trainer=smoke writes results.json with the
objective's metrics (every model on copy_memory through one Hydra multirun; one model on
each other task), the memory presets compose, and the evidence scripts parse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from surnn.harness.cli import CONFIG_DIR, choices
from surnn.harness.config import BackboneConfig, TrainerConfig, checked
from surnn.harness.registry import MIXERS
from tasks.formats import write_wikitext
from tests.fixtures import ROOT, in_tmp, precheck_error, run_in_tmp, run_py_env, train_here

SMALL = [
    "task.options.n_val=6",
    "task.options.n_test=5",
    "logger=none",
    "trainer=smoke",
    "trainer.max_steps=2",
]


def results(tmp) -> dict[str, dict]:
    out = {}
    for p in (tmp / "out").rglob("results.json"):
        r = json.loads(p.read_text())
        out[f"{r['task']}/{r['model']}"] = r
    return out


@pytest.mark.slow
def test_every_model_on_copy_memory_in_one_multirun(tmp_path):
    models = ",".join(MIXERS.names())
    args = ["-m", "task=copy_memory", f"model={models}", "task.options.delay=12", *SMALL]
    p = run_in_tmp(args, tmp_path, 600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = results(tmp_path)
    assert set(res) == {f"copy_memory/{m}" for m in MIXERS.names()}
    for name, r in res.items():
        assert r["objective"] == "tokens" and r["metric_name"] == "acc", name
        assert r["best_val_metric"] == pytest.approx(r["best_val_metric"])  # not NaN
        assert {"acc", "seq_acc", "loss"} <= set(r["test_metrics"]), name
        assert r["test_acc"] == r["test_metrics"]["acc"] and r["test_examples"] == 5
        assert r["test_metrics"]["targets"] == 50  # 5 sequences x 10 recalled symbols
        assert "best_val_acc" not in r  # classification's field only
        assert r["flops_per_seq"] > 0 and r["flops_per_layer"]
    hyb = res["copy_memory/hybrid"]
    assert hyb["layer_kinds"] == {"layer0": "surnn", "layer1": "s4d"}
    assert set(hyb["update_rate"]) == {"layer0"}
    assert 0 < res["copy_memory/surnn"]["update_rate"]["layer0"] < 1
    # copy memory says where its symbols sit: each suRNN layer's holding neurons are counted
    assert set(hyb["gate_holders"]) == {"layer0"} and res["copy_memory/gru"]["gate_holders"] is None
    assert 0 <= res["copy_memory/surnn"]["gate_holders"]["layer0"] <= 32
    # the evidence plots read these run folders: curves, table, gate raster
    out = tmp_path / "plots"
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "plot_memory.py"),
            str(tmp_path / "out"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=run_py_env(),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    md = (out / "memory.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "arm |" not in line]
    assert len([line for line in table if "|---" not in line and "copy_memory" not in line]) >= len(
        MIXERS.names()
    )  # one row per model (and the gate statistics' rows)
    assert "### copy memory, delay 12" in md
    assert (out / "memory-curves.png").stat().st_size > 0 and (out / "memory-raster.png").exists()
    assert (out / "memory-holders.png").exists()
    kept = sorted(p.name for p in (out / "runs" / "memory").iterdir())
    assert any(k.endswith(".metrics.jsonl") for k in kept)  # each run's evidence is kept
    assert len([k for k in kept if k.endswith(".json")]) == len(MIXERS.names())
    raster = json.loads((out / "memory-raster.json").read_text())
    assert "copy_memory-surnn-s0" in raster["run"]  # the sweep's suRNN run of seed 0
    assert 0 < raster["layer0"]["update_rate"] < 1
    rows = json.loads((out / "memory.json").read_text())
    su = next(w for w in rows if w["arm"] == "surnn")
    assert len(su["acc_by_position"]) == 10 and su["holders"] is not None
    stats = json.loads((out / "memory-gate_stats.json").read_text())
    (st,) = [s for s in stats if "copy_memory-surnn-" in s["run"]]  # the suRNN run
    lay = st["layer0"]
    assert st["task"] == "copy_memory" and lay["delay"] == 12
    assert 0 <= lay["open_at_input_then_closed_through_delay"] <= lay["closed_through_delay"]
    assert lay["longest_closed_median"] <= lay["longest_closed_max"] <= 12 + 20  # T = 32
    assert "What the trained gates can hold" in md


def test_longest_closed_stretch():
    from surnn.harness.trained_gates import longest_closed

    assert longest_closed([1, 0, 0, 1, 0, 0, 0, 1]) == 3
    assert longest_closed([1, 1]) == 0 and longest_closed([0, 0]) == 2


def test_arm_names_and_comparisons():
    """plot_memory's arms and comparisons: a run whose command overrides a model option is
    its own arm; every pair of arms with 2 or more seeds is compared."""
    from tests.fixtures import load_script

    pm = load_script("plot_memory")
    from surnn.harness.results import RunResult

    cmd = "python run.py seed=0 experiment=memory/copy/clockwork logger=none"
    run = RunResult(model="surnn", variant="clockwork", command=cmd)
    assert pm.label(run) == "surnn [clockwork]"
    run.command += " model.options.gate.rate_min=0.000245"
    assert pm.label(run) == "surnn [clockwork, gate.rate_min=0.000245]"
    rows = [
        {"setting": "s", "arm": "x", "metric": "acc", "test": [0.30, 0.35, 0.32]},
        {"setting": "s", "arm": "y", "metric": "acc", "test": [0.40, 0.45, 0.43]},
        {"setting": "s", "arm": "z", "metric": "acc", "test": [0.5]},  # 1 seed: not compared
    ]
    md, cmp = pm.comparisons(rows)
    assert [(c["a"], c["b"]) for c in cmp] == [("x", "y")] and "| s | x | y | 3 / 3 |" in md
    other = [  # another table's arms: compared with this one's of the same setting only
        {"setting": "s", "arm": "w (memory)", "metric": "acc", "test": [0.2, 0.25]},
        {"setting": "t", "arm": "v (memory)", "metric": "acc", "test": [0.2, 0.25]},
    ]
    _, cmp = pm.comparisons(rows, other)
    pairs = [(c["a"], c["b"]) for c in cmp]
    assert pairs == [("x", "y"), ("x", "w (memory)"), ("y", "w (memory)")]


def test_runs_of_one_folder_name_under_two_roots_keep_both(tmp_path):
    """plot_memory names a run by its folder; folders of one name under two roots (a rerun
    of an arm with an override beside the preset's) get their parent's name in front, so
    neither overwrites the other in runs/<table>/."""
    from tests.fixtures import load_script, write_run_folder

    pm = load_script("plot_memory")
    for root, run in (("a", "d1000-s0"), ("b", "d1000-s0"), ("b", "d200-s0")):
        write_run_folder(tmp_path / root / run, {"objective": "tokens", "metric_name": "acc"})
    names = sorted(r.name for r in pm.find_runs([tmp_path / "a", tmp_path / "b"]))
    assert names == ["a-d1000-s0", "b-d1000-s0", "d200-s0"]


@pytest.mark.slow
def test_adding_and_selective_copy_smoke(tmp_path):
    # (one run per task, not a sweep: Hydra composes a task sweep's base config with the
    # default task, which has none of these task.options; both in this process, as run.py
    # trains: the outcome is tested here, the command line by the multiruns around)
    data, out = f"data_dir={tmp_path / 'data'}", tmp_path / "out"
    train_here(["task=adding", "model=surnn", "task.options.length=30", *SMALL, data], out, "add")
    sc = ["task=selective_copy", "model=hybrid", "task.options.length=40", *SMALL, data]
    train_here(sc, out, "sc")
    res = results(tmp_path)
    add = res["adding/surnn"]
    assert add["objective"] == "regress" and add["metric_name"] == "mse"
    assert add["test_mse"] == add["test_metrics"]["mse"] >= 0
    assert "baseline_mse" in add["test_metrics"] and "test_acc" not in add
    sc = res["selective_copy/hybrid"]
    assert sc["test_metrics"]["targets"] == 5 * 16 and "seq_acc" in sc["test_metrics"]


@pytest.mark.slow
def test_wikitext2_smoke_with_and_without_carried_state(tmp_path):
    write_wikitext(tmp_path / "data", "wikitext-2", articles={"train": 30, "valid": 3, "test": 3})
    lm = [
        "task=wikitext2",
        "task.options.max_len=16",
        "task.options.hub=false",
        "logger=none",
        "trainer=smoke",
        "trainer.max_steps=2",
    ]
    for model in ("lstm", "transformer"):  # in this process (run.py's -m: the copy_memory test)
        train_here(
            [f"model={model}", *lm, f"data_dir={tmp_path / 'data'}"], tmp_path / "out", model
        )
    res = results(tmp_path)
    for model, carried in (("lstm", True), ("transformer", False)):
        r = res[f"wikitext2/{model}"]
        assert r["objective"] == "lm" and r["metric_name"] == "loss"
        assert not r["metric_higher_is_better"]
        assert r["carry_state"] is carried
        m = r["test_metrics"]
        assert {"loss", "ppl", "bpt"} <= set(m) and m["ppl"] > 1
        assert r["split_sizes"]["test"] == m["targets"] + 1  # every test token predicted
    # run.py's one line (exit 2) for a bidirectional model on a causal task, from precheck
    bad = ["model=transformer", "model.options.causal=false", "run_id=bad"]
    assert "causal" in precheck_error(in_tmp([*lm, *bad], tmp_path))


MEMORY_PRESETS = sorted(c for c in choices("experiment") if c.startswith("memory/"))


def test_every_new_task_and_model_has_a_preset():
    tasks = {"selective_copy", "copy_memory", "adding", "wikitext103"}
    have = {(c.split("/")[1].rsplit("_", 1)[0]) for c in MEMORY_PRESETS}
    assert tasks <= have, tasks - have


@pytest.mark.parametrize("exp", MEMORY_PRESETS)
def test_memory_presets_compose_and_say_where_they_come_from(exp):
    text = (CONFIG_DIR / "experiment" / f"{exp}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert "Source:" in text and "HARNESS CHOICE" in text
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=[f"experiment={exp}", "logger=none"])
    checked(BackboneConfig, cfg.model, "model")
    tcfg = checked(TrainerConfig, cfg.trainer, "trainer")
    assert tcfg.max_steps > tcfg.eval_every > 0


def test_evidence_scripts_parse(capsys):
    """plot_memory's options, in this process (its command line runs in
    test_every_model_on_copy_memory_in_one_multirun)."""
    from tests.fixtures import load_script

    with pytest.raises(SystemExit) as e:
        load_script("plot_memory").main(["--help"])
    assert e.value.code == 0 and "raster" in capsys.readouterr().out
