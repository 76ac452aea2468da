"""scripts/surrogate_table.py: the surrogate study's runs grouped by surrogate, accuracy
beside the work computed in training and the benchmark's step times."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.fixtures import ROOT, load_script, write_run_folder

st = load_script("surrogate_table")


def _run(root, variant, seed, acc, active):
    res = {
        "seed": seed,
        "variant": variant,
        "test_acc": acc,
        "best_val_acc": acc + 0.01,
        "update_rate": {"layer0": 0.17, "layer1": 0.171},
        "steps": 1000,
        "threads": 1,
        "test_majority_class": 0.176,
        "train_time_s": 600.0,
        "step_time_s": 0.6,
        "git_commit": "abc",
        "kernel": "compiled",
        "command": "python run.py -m seed=0,1 experiment=surrogate/ste",
    }
    log = [
        {"step": s, "train/layer0/active_rate": a, "train/layer1/active_rate": a} for s, a in active
    ]
    write_run_folder(root / f"{variant}-s{seed}", res, log)


def _bench(path, loadavg=0.3):
    rows = []
    for shape, scale in (("demo", 0.01), ("big", 1.0)):
        for name, t in (("ste", 2.0), ("triangle w=1", 1.0)):
            rows.append(
                {
                    "setting": f"surrogate {shape}",
                    "surrogate": name,
                    "case_min_s": t * scale,
                    "ratio_of_min": 3.0 / t,
                    "case_train_active_rate": 1.0 if name == "ste" else 0.4,
                    "sizes": {"B": 64, "T": 150, "D": 64, "H": 64},
                }
            )
    meta = {
        "command": "python scripts/bench_surnn.py --suite targets --settings surrogate",
        "device": "cpu",
        "threads": 2,
        "impl": "compiled",
        "commit": "abc",
        "date": "today",
        "reps": 15,
        "loadavg_before_after": [[loadavg] * 3, [loadavg] * 3],
        "label": "quiet",
        "rows": rows,
    }
    path.write_text(json.dumps(meta))


def test_the_table_groups_by_surrogate_and_times_from_the_bench(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, acc in enumerate((0.40, 0.42)):
        _run(runs, "surrogate=ste", seed, acc, [(50, 1.0), (100, 1.0)])
        _run(runs, "surrogate=triangle,width=1.0", seed, acc - 0.02, [(50, 0.4), (100, 0.5)])
    _bench(tmp_path / "bench.json")
    out = tmp_path / "table"
    argv = [str(runs), "--bench", str(tmp_path / "bench.json"), "--out", str(out), "--copy-runs"]
    assert st.main(argv) == 0
    table = json.loads((out / "surrogate.json").read_text())
    ste, tri = table["rows"]
    assert (ste["surrogate"], tri["surrogate"]) == ("ste", "triangle w=1")  # ste first
    assert ste["test_acc"] == pytest.approx([40.0, 42.0])
    assert tri["test_acc_mean"] == pytest.approx(39.0)
    assert ste["train_computed_mean"] == 1.0 and tri["train_computed_mean"] == pytest.approx(0.45)
    assert tri["bench_demo"]["vs_ste"] == pytest.approx(2.0)
    # layers x steps x the demo-shape step
    assert tri["recurrent_train_time_s"] == pytest.approx(2 * 1000 * 0.01)
    # Welch against ste: equal spreads, 2 points lower: t = -2 / sqrt(2), df = 2, where the
    # t distribution's two-sided tail is 1 - |t| / sqrt(t^2 + 2) = 1 - sqrt(2) / 2
    assert "welch_vs_ste" not in ste and tri["welch_vs_ste"]["diff"] == pytest.approx(-2.0)
    assert tri["welch_vs_ste"]["df"] == pytest.approx(2.0)
    assert tri["welch_vs_ste"]["p"] == pytest.approx(1 - 2**0.5 / 2, rel=1e-9)
    md = (out / "surrogate.md").read_text()
    assert "| triangle w=1 | 38.0 / 40.0 | 39.00 ± 1.41 | 0.29 (-2.00) |" in md
    assert "Seeds 0, 1;" in md  # every arm ran both
    assert "2.00x / – / 2.00x" in md and "Warning" not in md and "DEMO SCALE" in md
    made = md.split("## How this table was made")[1].split("```")[1].splitlines()
    words = shlex.split(made[3])  # after reproduce.py's and the runs' commands: this one
    assert words[0] == "python" and words[2:] == argv
    assert (ROOT / words[1]).resolve() == ROOT / "scripts" / "surrogate_table.py"
    assert sorted(p.name for p in (out / "runs").iterdir())[0] == "surrogate=ste-s0.json"
    # the copied summaries rebuild the same table
    assert (
        st.main([str(out / "runs"), "--bench", str(tmp_path / "bench.json"), "--out", str(out)])
        == 0
    )
    assert (
        json.loads((out / "surrogate.json").read_text())["rows"][1]["test_acc"] == tri["test_acc"]
    )
    # new runs beside the copies, copied in: the copies stay, the new ones join them
    more = tmp_path / "more"
    _run(more, "surrogate=ste", 2, 0.44, [(50, 1.0), (100, 1.0)])
    argv = [str(out / "runs"), str(more), "--bench", str(tmp_path / "bench.json")]
    assert st.main([*argv, "--out", str(out), "--copy-runs"]) == 0
    assert (out / "runs" / "surrogate=ste-s2.json").exists()
    rows = json.loads((out / "surrogate.json").read_text())["rows"]
    assert rows[0]["test_acc"] == pytest.approx([40.0, 42.0, 44.0])


def test_without_a_quiet_bench_the_table_says_what_fills_it(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "surrogate=ste", 0, 0.4, [(50, 1.0)])
    _run(runs, "surrogate=ste", 1, 0.42, [(50, 1.0)])
    _run(runs, "surrogate=triangle,width=0.1", 0, 0.4, [(50, 0.2)])
    assert st.main([str(runs), "--out", str(tmp_path / "a")]) == 0
    md = (tmp_path / "a" / "surrogate.md").read_text()
    assert "No benchmark yet" in md and "--settings surrogate" in md
    # one seed has no spread; arms that ran different seeds say which
    assert "| triangle w=0.1 | 40.0 | 40.00 (1 seed) |" in md
    assert "Seeds per arm (not every arm ran every seed): ste 0, 1; triangle w=0.1 0;" in md
    _bench(tmp_path / "loaded.json", loadavg=7.0)
    assert (
        st.main([str(runs), "--bench", str(tmp_path / "loaded.json"), "--out", str(tmp_path / "b")])
        == 0
    )
    assert "did not run on a quiet machine" in (tmp_path / "b" / "surrogate.md").read_text()


def test_a_run_without_a_surrogate_variant_is_one_clear_error(tmp_path):
    _run(tmp_path / "runs", "gate=binary", 0, 0.4, [])
    with pytest.raises(SystemExit, match="names no surrogate"):
        st.main([str(tmp_path / "runs"), "--out", str(tmp_path / "t")])
