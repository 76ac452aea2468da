"""scripts/bench_checkpoint.py on a tiny trained run folder: the rates it measures are the
trainer's, the open-gate case runs at rate 1, bad folders are one line and exit 2, and
make_tables puts the measurement beside the paper's published 83% / 5.3x."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from surnn.harness.cli import CONFIG_DIR
from surnn.harness.run import train
from tests.fixtures import ROOT, TINY_LISTOPS, load_script

bench = load_script("bench_checkpoint")
make_tables = load_script("make_tables")

TINY = [
    "task=listops",
    "model=surnn",
    "trainer=smoke",
    "logger=none",
    "run_id=tiny",
    *TINY_LISTOPS,
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A suRNN run folder as run.py writes it (4 smoke steps on a small generated ListOps;
    trained in this process: a run.py subprocess would cost its imports)."""
    tmp = tmp_path_factory.mktemp("effbench")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=[*TINY, f"data_dir={tmp / 'data'}", f"output_dir={tmp / 'out'}"]
        )
    run_dir = tmp / "out" / "tiny"
    run_dir.mkdir(parents=True)
    train(cfg, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def measured(tiny_run):
    out = tiny_run.parent.parent / "bench"
    assert bench.main([str(tiny_run), "--reps", "1", "--examples", "0", "--out", str(out)]) == 0
    return json.loads((out / "checkpoint_tiny_B256.json").read_text()), out


def test_rates_are_the_trainers_and_every_open_gate_has_rate_1(tiny_run, measured):
    b, out = measured
    res = json.loads((tiny_run / "results.json").read_text())
    assert b["kind"] == "checkpoint_efficiency" and b["task"] == "listops"
    assert b["examples"] == b["test_examples_total"] == res["test_examples"] == 21
    assert b["batch"] == 256 and b["reps"] == 1  # the smoke trainer's eval batch
    keys = ("commit", "threads", "device", "impl", "loadavg_before", "loadavg_after")
    for key in (*keys, "cpu_per_wall"):
        assert b[key] not in (None, ""), key
    assert b["checkpoint"] == "best.pt" and b["run_dir"] == str(tiny_run.resolve())
    # the command that runs this measurement again: the script and the arguments it was given
    words = shlex.split(b["command"])
    assert (
        words[0] == "python"
        and Path(words[1]).resolve() == ROOT / "scripts" / "bench_checkpoint.py"
    )
    assert words[2:] == [str(tiny_run), "--reps", "1", "--examples", "0", "--out", str(out)]
    # (a) per layer per valid token, as the trainer reports it: the same examples, the same
    # weights, so results.json's test rate and accuracy come back
    assert b["update_rate"].keys() == res["update_rate"].keys() == {"layer0"}
    assert b["update_rate"]["layer0"] == pytest.approx(res["update_rate"]["layer0"], abs=1e-6)
    assert 0 < b["update_rate"]["layer0"] < 1
    assert b["test_metrics"]["acc"] == pytest.approx(res["test_acc"])
    # the timed passes: the learned gate at that rate, every gate open at rate 1
    c = b["cases"]
    assert c["learned"]["update_rate"]["layer0"] == pytest.approx(b["update_rate"]["layer0"])
    assert c["open"]["update_rate"] == {"layer0": 1.0}
    assert c["learned"]["impl"] == c["open"]["impl"] == b["impl"]  # the same kernel
    assert b["nn_gru_max_abs_diff_vs_open"] < 1e-4  # nn.GRU: the same weights, dense
    assert [p["baseline"] for p in b["pairs"]] == ["open", "nn_gru", "eager_dense"]
    for p in b["pairs"]:
        assert len(p["base_times_s"]) == len(p["case_mixer_times_s"]) == 1
        assert p["speedup_model"] > 0 and p["speedup_mixer"] > 0
    for v in c.values():
        assert 0 < v["mixer_min_s"] < v["min_s"]  # recurrent layers: part of the model
        # the dense parts: the rest of the same pass, at its fastest
        rest = [t - m for t, m in zip(v["times_s"], v["mixer_times_s"])]
        assert v["dense_min_s"] == min(rest) > 0
        assert v["dense_ms_per_seq"] == pytest.approx(1e3 * min(rest) / b["examples"])
    # every raw time kept: the learned gate runs once after each of its three baselines
    assert len(c["learned"]["times_s"]) == len(c["learned"]["cpu_times_s"]) == 3
    assert len(c["open"]["mixer_times_s"]) == len(c["nn_gru"]["times_s"]) == 1
    # the run's setting, read from the run: a smoke run, not the paper's sMNIST setting
    assert b["scale"] == "smoke" and "smoke" in b["setting"] and not b["paper_setting"]
    # the dense parts fused in every case (the CPU default), the eager ones timed beside:
    # the same model to float rounding, every prediction equal
    assert b["dense"] == "fused" and "dense parts fused" in c["learned"]["label"]
    assert c["eager_dense"]["update_rate"] == c["learned"]["update_rate"]
    fe = b["fused_vs_eager"]
    assert fe["max_abs_diff"] < 1e-5 and fe["predictions_agree"] == fe["of"] == 21
    md = (out / "checkpoint_tiny_B256.md").read_text()
    assert "NOT the paper's sMNIST setting" in md and "recurrent layers" in md
    assert "run dense in every case" in md and "| dense parts ms/seq |" in md
    assert "Dense parts fused (`surnn.harness.fused`" in md and "equal on 21 of 21" in md
    row = next(line for line in md.splitlines() if "dense parts eager (torch)" in line)
    assert row.endswith("| – | – |")  # not a speedup of the learned gate


def test_streaming_batch_1_on_a_few_examples(tiny_run, tmp_path):
    argv = [str(tiny_run), "--reps", "1", "--examples", "3", "--batch", "1", "--no-gru"]
    assert bench.main([*argv, "--out", str(tmp_path)]) == 0
    b = json.loads((tmp_path / "checkpoint_tiny_B1.json").read_text())
    assert b["batch"] == 1 and b["examples"] == 3
    assert list(b["cases"]) == ["learned", "open", "eager_dense"]
    assert b["cases"]["learned"]["update_rate"]["layer0"] == pytest.approx(
        b["update_rate"]["layer0"]
    )


def test_dense_eager_times_every_case_with_the_torch_modules(tiny_run, tmp_path):
    argv = [str(tiny_run), "--reps", "1", "--examples", "3", "--batch", "1", "--no-gru"]
    assert bench.main([*argv, "--dense", "eager", "--out", str(tmp_path)]) == 0
    b = json.loads((tmp_path / "checkpoint_tiny_B1.json").read_text())
    assert b["dense"] == "eager" and b["fused_vs_eager"] is None
    assert list(b["cases"]) == ["learned", "open"]
    assert "dense parts eager" in b["cases"]["learned"]["label"]
    assert "Dense parts fused" not in (tmp_path / "checkpoint_tiny_B1.md").read_text()


def test_bad_folders_are_one_line_and_exit_2(tiny_run, tmp_path, capsys):
    no_ckpt = tmp_path / "no-ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    cases = [
        (tmp_path / "missing", "does not exist"),
        (no_ckpt, "has no checkpoints/best.pt or last.pt"),
        (tmp_path, "has no config.yaml"),
    ]
    for folder, what in cases:
        assert bench.main([str(folder), "--out", str(tmp_path / "b")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and what in err, err
        assert str(folder) in err
    assert not (tmp_path / "b").exists()


def test_make_tables_puts_the_published_numbers_beside_the_measured_row(tiny_run, measured):
    b, out = measured
    tables = out.parent / "tables"
    assert make_tables.main([str(tiny_run), "--out", str(tables), "--efficiency", str(out)]) == 0
    md = (tables / "lra.md").read_text()
    eff = md.split("## Efficiency")[1].split("## Provenance")[0]
    published = next(l for l in eff.splitlines() if l.startswith("| suGRU (paper): published"))
    assert "| 83% |" in published and "5.3x (466 -> 88 ms)" in published
    row = next(l for l in eff.splitlines() if l.startswith("| measured: tiny"))
    assert "| listops | smoke" in row and "(not the paper's sMNIST setting)" in row
    assert f"| {100 * b['skipped']:.1f}% |" in row
    c = b["cases"]
    dense = f"| {c['learned']['dense_ms_per_seq']:.3g} fused ({c['eager_dense']['dense_ms_per_seq']:.3g} eager) |"
    assert dense in row
    assert "Efficiency" in (tables / "lra.tex").read_text()
    with pytest.raises(SystemExit, match="no scripts/bench_checkpoint.py JSON"):
        make_tables.main([str(tiny_run), "--out", str(tables), "--efficiency", str(tiny_run)])


def test_compile_times_the_dense_parts_compiled_beside_the_eager_model(
    tiny_run, tmp_path, monkeypatch
):
    """--compile: a case whose dense parts run under torch.compile (here its eager backend,
    to keep the suite fast; the committed benchmark uses inductor), the suRNN layers eager at
    the same rate, timed right after the eager learned-gate model, the same outputs."""
    compile_ = bench.torch.compile
    monkeypatch.setattr(
        bench.torch, "compile", lambda m, **kw: compile_(m, **{**kw, "backend": "eager"})
    )
    argv = [str(tiny_run), "--reps", "1", "--examples", "8", "--batch", "4", "--no-gru"]
    assert bench.main([*argv, "--compile", "--out", str(tmp_path)]) == 0
    b = json.loads((tmp_path / "checkpoint_tiny_B4.json").read_text())
    c = b["cases"]
    assert c["compiled"]["update_rate"] == pytest.approx(c["learned"]["update_rate"])
    assert 0 < c["compiled"]["mixer_min_s"] < c["compiled"]["min_s"]  # layers timed eagerly
    assert [(p["baseline"], p["case"]) for p in b["pairs"]] == [
        ("open", "learned"),
        ("eager_dense", "learned"),
        ("eager_dense", "compiled"),  # compiled against the eager dense parts it replaces
    ]
    assert b["compiled_max_abs_diff_vs_eager"] < 1e-5
    md = (tmp_path / "checkpoint_tiny_B4.md").read_text()
    assert "torch.compile of the dense parts" in md
    row = next(line for line in md.splitlines() if "torch.compile'd" in line)
    assert row.endswith("| – | – |")  # not a speedup of the learned gate
