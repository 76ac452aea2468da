"""scripts/gpu_check.sh is run once, on a rented GPU with minutes to spare: its own logic is
checked here, on the CPU, through its --dry-run (Triton interpreter, tiny sizes): every step
runs, one JSON comes out, and scripts/make_tables.py reads it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from surnn.harness.paper_tables import gpu_table
from tests.fixtures import load_script

ROOT = Path(__file__).resolve().parents[2]


def gpu_check(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """scripts/gpu_check.sh run in ``tmp_path``, its JSON to tmp_path/check.json, without
    the Triton interpreter flag of this process."""
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path / "check.json")}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs make setup")
def test_gpu_check_dry_run_runs_every_step_and_writes_one_json(tmp_path):
    out = tmp_path / "check.json"
    p = gpu_check(tmp_path, "--dry-run", timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    r = json.loads(out.read_text())
    assert r["kind"] == "gpu_check" and r["dry_run"]
    assert r["tests"]["result"].startswith("passed")
    assert set(r["sanitizer"]) == {"memcheck", "racecheck", "initcheck"}
    assert all(v["result"].startswith("skipped: dry run") for v in r["sanitizer"].values())
    assert r["long"]["ok"] and set(r["long"]["error_vs_float64"]) >= {"out", "dw_hh", "dg"}
    rows = {row["case"]: row for row in r["timings"]["rows"]}
    assert {"nn.GRU fwd", "nn.GRU train", "su rate 1 fwd", "su rate 0.17 train"} <= set(rows)
    phases = set(rows["su rate 0.17 train"]["phases_per_step_us"])
    assert phases == {"fwd_gemm", "fwd_steps", "bwd_gemm_recompute", "bwd_steps", "bwd_gemm_grads"}
    assert rows["su rate 1 fwd"]["estimate_per_step_us"] > 0
    assert r["rhythm"]["gate"] == "rhythm"
    table = p.stdout.split("== 6. summary")[-1]
    for case in ("nn.GRU fwd", "su rate 1 train", "su rate 0.17 fwd", "long run", "learned rhythm"):
        assert case in table
    mt = load_script("make_tables")
    gpu = mt.find_gpu_checks([tmp_path])
    md = "\n".join(gpu_table(gpu).markdown())
    assert "su rate 0.17 train" in md and "DRY RUN" in md


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs make setup")
def test_gpu_check_without_a_gpu_stops_with_one_line(tmp_path):
    """A GPU run on a machine whose torch sees no CUDA GPU: exit 2, one line, no step run."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    p = gpu_check(tmp_path, timeout=120)
    assert p.returncode == 2, (p.stdout + p.stderr)[-2000:]
    assert p.stdout == "" and p.stderr.strip().splitlines() == [
        "gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False); "
        "--dry-run checks the script on the CPU"
    ]
    assert not (tmp_path / "check.json").exists()
