"""scripts/handset_gate.py and scripts/gate_analysis.py: the study's hand-set gate and its
measurement of why a gate can or cannot come to hold."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import torch

from surnn.gates import build_gate, hold_stats
from tests.fixtures import ROOT, load_script


def test_the_handset_gate_holds_the_symbols_and_nothing_else(tmp_path):
    hs = load_script("handset_gate")
    out = tmp_path / "gate.json"
    assert hs.main(["--delay", "30", "--hidden", "8", "--out", str(out)]) == 0
    gate = build_gate(8, 8, {"kind": "rhythm", "n_freqs": 1, "params": str(out), "frozen": True})
    with torch.no_grad():
        g, _ = gate(50)  # T = 2 * 10 + 30
    assert hold_stats(g, (0, 10), (10, 40)) == {
        "holders": 4,
        "late_holders": 4,
        "open_at_input": 8,
        "closed_through_hold": 4,
    }
    assert g[:10, :4].all() and not g[10:, :4].any() and g[:, 4:].all()
    (log_omega,) = json.loads(out.read_text())["log_omega"]
    assert abs(log_omega - math.log(2 * math.pi / 200.0)) < 1e-6  # one period of 4T
    assert hs.main(["--delay", "30", "--hidden", "8", "--holders", "9", "--out", str(out)]) == 2


def test_gate_analysis_counts_what_a_bias_alone_could_make_hold(tmp_path):
    ga = load_script("gate_analysis")
    small = ["task.options.n_val=4", "task.options.n_test=4"]
    rows = [ga.analyse(arm, 40, 2, small) for arm in ("uniform", "clockwork")]
    uni, cw = rows
    assert uni["periods"][0] == 2.0 and cw["periods"] == [1.0, 240.0]  # 4 x T = 4 x 60
    for r in rows:
        assert 0 <= r["holders"] <= r["bias_only"] + r["holders"] <= r["neurons"] == 64
        alpha = r["grad_arm_surrogate"]["alpha"]
        assert set(alpha["mean_abs_by_period"]) == {f"{p:.0f}" for p in r["periods"]}
    assert cw["holders"] > uni["holders"] == 0  # clockwork windows start at the symbols
    assert uni["grad_ste"]["bias"]["with_gradient"] == 1.0  # straight-through: every step
    md = ga.markdown(rows)
    assert md.count("\n| ") == 2 and "| clockwork | 40 |" in md  # one row per arm
    out = tmp_path / "ga"
    argv = ["--arms", "clockwork", "--delay", "40", "--batches", "2", "--out", str(out), *small]
    assert ga.main(argv) == 0
    made = json.loads(out.with_suffix(".json").read_text())
    assert made["commit"] and made["threads"] >= 1
    words = shlex.split(made["command"])  # the command that runs it alone, as typed
    assert words[0] == "python" and words[2:] == argv
    assert Path(words[1]).resolve() == ROOT / "scripts" / "gate_analysis.py"
    assert [r["arm"] for r in made["rows"]] == ["clockwork"]
    assert f"at commit {made['commit']}" in out.with_suffix(".md").read_text()
