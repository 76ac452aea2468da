"""scripts/reproduce.py: one command per table (the multirun it launches, then the table)."""

from __future__ import annotations

import json
import shlex

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from surnn.harness.cli import CONFIG_DIR, choices
from tests.fixtures import ROOT, load_script

reproduce = load_script("reproduce")


@pytest.mark.parametrize("table", ["lra", "pixel", "ablation", "efficiency"])
@pytest.mark.parametrize("scale", ["full", "mini"])
def test_every_table_plans_presets_that_exist_and_compose(table, scale):
    exps, seeds, skipped = reproduce.plan(table, scale)
    assert set(exps) <= set(choices("experiment")), set(exps) - set(choices("experiment"))
    assert seeds == ([0, 1, 2] if scale == "full" else [0])
    if scale == "mini":  # only tasks whose data this machine generates; the rest say why
        for e in exps:
            with initialize_config_dir(str(CONFIG_DIR), version_base=None):
                cfg = compose("config", overrides=[f"experiment={e}"])
            assert cfg.task.name in ("listops", "pathfinder"), e
            assert cfg.trainer.max_steps <= 400
        assert all(len(why) > 20 for why in skipped.values())
    if table == "ablation":
        variants = set()
        for e in exps:
            with initialize_config_dir(str(CONFIG_DIR), version_base=None):
                variants.add(compose("config", overrides=[f"experiment={e}"]).variant)
        assert len(variants) == 7  # each gate its own row
        assert {"gate=binary", "gate=triangle", "gate=input", "gate=soft"} <= variants


def test_dry_run_prints_one_multirun_and_the_table_command(capsys):
    assert reproduce.main(["lra", "--scale", "mini", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    sweeps = [line for line in out if "run.py -m " in line]
    assert len(sweeps) == 1  # the whole table is one Hydra multirun
    assert "experiment=mini/listops_surnn,mini/listops_gru," in sweeps[0]
    assert "mini/pathfinder_transformer" in sweeps[0] and "hydra/launcher=basic" in sweeps[0]
    assert any("make_tables.py" in line and "--setting" in line for line in out)
    assert any(line.startswith("skipped: text:") for line in out)
    assert reproduce.main(["lra", "--launcher", "slurm", "--dry-run", "x.y=1"]) == 0
    full = capsys.readouterr().out
    assert "hydra/launcher=slurm" in full and "seed=0,1,2" in full and "lra/pathx_surnn" in full
    assert full.split("run.py -m ")[1].split("\n")[0].endswith("x.y=1")


@pytest.mark.parametrize(
    "table", ["memory", "memory-offset", "memory-long", "memory-remedies", "memory-selective"]
)
def test_the_memory_study_is_one_multirun_of_composing_arms(table, capsys):
    exps, seeds, _ = reproduce.plan(table, "full")
    assert set(exps) <= set(choices("experiment")) and seeds == [0, 1, 2]
    for e in exps:
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            cfg = compose("config", overrides=[f"experiment={e}"])
        copy = table != "memory-selective"
        assert cfg.task.name == ("copy_memory" if copy else "selective_copy")
        assert cfg.model.n_layers == (1 if copy else 2)
        assert cfg.model.d_model == 64 and cfg.trainer.batch_size == 32
    assert reproduce.main([table, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    (sweep,) = [line for line in out if "run.py -m " in line]
    assert sweep.split("run.py -m ")[1].startswith("seed=0,1,2 ")
    if copy:
        assert "task.options.delay=1000" in sweep
        assert "d${task.options.delay}-o${task.options.offset}" in sweep
    assert any("plot_memory.py" in line and f"--name {table}" in line for line in out)


def test_a_table_without_data_here_and_a_bad_subset_fail_clearly(capsys):
    assert reproduce.main(["pixel", "--scale", "mini", "--dry-run"]) == 2
    assert "MNIST must be downloaded" in capsys.readouterr().out
    assert reproduce.main(["lra", "--scale", "mini", "--only", "lra/text_gru", "--dry-run"]) == 2


@pytest.mark.slow
def test_a_tiny_table_through_the_whole_path(tmp_path, monkeypatch):
    """reproduce.py (in this process) -> one multirun of run.py -> make_tables -> the table
    with its commands."""
    tiny = [
        "trainer.max_steps=1",
        "trainer.eval_every=1",
        "trainer.ckpt_every=1",
        "trainer.flops=false",
        "task.options.generate.n_train=32",
        "task.options.generate.n_val=10",
        "task.options.generate.n_test=11",
    ]
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # what its commands import: this checkout
    args = ["lra", "--scale", "mini", "--only", "mini/listops_gru"]
    args += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "tables")]
    args += ["--data-dir", str(tmp_path / "data"), *tiny]
    assert reproduce.main(args) == 0
    md = (tmp_path / "tables" / "lra-mini.md").read_text()
    assert "non-standard setting: mini scale" in md and "| gru |" in md
    assert "44.93" not in md  # no published numbers beside a mini table
    assert "## How this table was made" in md and "## Skipped tasks" in md
    # first the command that remakes the table: this script with the arguments it was given
    words = shlex.split(md.split("## How this table was made")[1].split("```")[1].splitlines()[1])
    assert words[0] == "python" and words[2:] == args
    assert (ROOT / words[1]).resolve() == ROOT / "scripts" / "reproduce.py"
    assert (tmp_path / "tables" / "lra-mini.tex").exists()
    # each run records its own command, as if run alone: check_results.py reruns it
    (res,) = (tmp_path / "runs").glob("*/results.json")
    command = json.loads(res.read_text())["command"]
    assert " -m " not in command and "run.py experiment=mini/listops_gru seed=0 " in command


@pytest.mark.parametrize("scale", ["full", "mini"])
def test_every_gate_of_the_ablation_builds_and_trains_a_step(scale):
    from types import SimpleNamespace

    import torch

    from surnn.harness.backbone import Model

    torch.manual_seed(0)
    standin = SimpleNamespace(
        n_classes=10, input_kind="tokens", vocab_size=20, input_dim=None, max_len=64, dual=False
    )
    for e in reproduce.plan("ablation", scale)[0]:
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            m = compose("config", overrides=[f"experiment={e}"]).model
        opts = {**m.options, "impl": "reference"}
        net = Model(standin, m.name, opts, d_model=16, n_layers=1, ffn_mult=m.ffn_mult)
        batch = {"x": torch.randint(1, 20, (2, 24)), "lengths": torch.tensor([24, 9])}
        logits, aux = net(batch)
        logits.sum().backward()
        assert 0.0 < float(aux["layer0/update_rate"]) <= 1.0, e


def test_the_rate_control_arms_are_the_committed_runs_settings(capsys):
    """Each arm composes to the config its committed seed-0 run recorded (its command, run
    alone), and the study is one multirun on one CPU thread per run, seeds slowest."""

    def resolved(overrides):
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            cfg = compose("config", overrides=overrides)
        out = OmegaConf.to_container(cfg, resolve=True)
        out.pop("output_dir")
        return out

    exps, seeds, _ = reproduce.plan("rate-control", "full")
    assert seeds == [0, 1, 2] and len(exps) == 4
    for e in exps:
        arm = e.split("/")[1]
        res = json.loads(
            (ROOT / "results" / "rate_control" / "runs" / f"rate-{arm}-s0.json").read_text()
        )
        words = shlex.split(res["command"])
        recorded = resolved(words[words.index("run.py") + 1 :])
        now = resolved([f"experiment={e}", "seed=0", "logger=none", "trainer.progress=false"])
        variant = now.pop("variant")  # run.py reads "none" as no label
        assert (None if variant == "none" else variant) == res["variant"]
        recorded.pop("variant")
        assert now == recorded, arm
    assert reproduce.main(["rate-control", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    (sweep,) = [line for line in out if "run.py -m " in line]
    assert sweep.startswith("env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ")
    assert "run.py -m seed=0,1,2 experiment=rate_control/t017," in sweep
    assert "'hydra.sweep.subdir=${run_id}'" in sweep
    assert any("make_tables.py" in line and "demo_rate_control" in line for line in out)
    assert any("make_figures.py acc-rate" in line for line in out)


def test_the_surrogate_study_is_one_multirun_of_arms_differing_in_the_surrogate(capsys):
    exps, seeds, _ = reproduce.plan("surrogate", "full")
    assert set(exps) <= set(choices("experiment")) and seeds == [0, 1, 2]
    gates = {}
    for e in exps:
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            cfg = compose("config", overrides=[f"experiment={e}"])
            lra = compose("config", overrides=["experiment=lra/listops_surnn"])
        assert cfg.task.name == "listops" and cfg.trainer.max_steps == 1000  # the demo
        gate = dict(cfg.model.options.gate)
        gates[e] = (gate.pop("surrogate"), gate.pop("width"))
        want = dict(lra.model.options.gate)
        want.pop("surrogate"), want.pop("width")
        want["period_max"] = cfg.task.options.max_len  # the sequence length, as the presets
        assert gate == want, e  # the gate as the LRA presets set it, but the surrogate
    assert sorted(gates.values(), key=str) == sorted(
        [("ste", None), ("triangle", 1.0), ("triangle", 0.3), ("triangle", 0.1)], key=str
    )
    assert reproduce.main(["surrogate", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    (sweep,) = [line for line in out if "run.py -m " in line]
    assert sweep.startswith("env OMP_NUM_THREADS=1 ")  # as the committed runs
    assert sweep.split("run.py -m ")[1].startswith("seed=0,1,2 experiment=surrogate/ste,")
    assert "hydra.sweep.subdir=${variant}-s${seed}" in sweep
    assert any("surrogate_table.py" in line and "--bench" in line for line in out)
