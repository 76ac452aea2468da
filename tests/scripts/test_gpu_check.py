"""scripts/gpu_check.sh is run once, on a rented GPU with minutes to spare: its own logic is
checked here, on the CPU, through its --dry-run (Triton interpreter, tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs make setup")
def test_gpu_check_dry_run_runs_every_step_and_prints_the_table(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "GPU_CHECK_OUT": str(out)}
    env.pop("TRITON_INTERPRET", None)
    p = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    table = p.stdout.split("== summary")[-1]
    for case in ("nn.GRU fwd", "su rate 1 train", "su rate 0.17 fwd"):
        assert case in table
    r = json.loads(out.read_text())
    assert r["impl"] == "triton" and {row["case"] for row in r["rows"]} >= {"su rate 0.17 train"}
    g = json.loads((tmp_path / "check_rhythm-g8.json").read_text())
    assert g["gate"] == "rhythm-g8" and "gate rhythm-g8" in table
    assert json.loads((tmp_path / "check_rhythm.json").read_text())["gate"] == "rhythm"
    assert "gate rhythm  " in table
