"""scripts/make_tables.py: aggregation over seeds, paper rows, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import ROOT, load_script

make_tables = load_script("make_tables")


def write_run(root: Path, task: str, model: str, seed: int, acc: float, **extra):
    d = root / f"{task}-{model}-s{seed}"
    d.mkdir(parents=True)
    res = {
        "task": task,
        "model": model,
        "seed": seed,
        "test_acc": acc,
        "best_val_acc": acc + 0.01,
        "test_majority_class": 0.17,
        "params": 1000,
        "flops_per_seq": 2e6,
        "flops_per_seq_dense": 4e6,
        "update_rate": {"layer0": 0.5, "layer1": 0.3},
        "step_time_s": 0.1,
        "tokens_per_s": 5e3,
        "device": "cpu",
        "git_commit": "abc",
        **extra,
    }
    (d / "results.json").write_text(json.dumps(res))


def test_mean_std_over_seeds_and_average(tmp_path):
    accs = {
        "listops": [0.40, 0.44],
        "text": [0.6, 0.6],
        "retrieval": [0.7, 0.7],
        "image": [0.5, 0.5],
        "pathfinder": [0.8, 0.8],
    }
    for task, vals in accs.items():
        for s, a in enumerate(vals):
            write_run(tmp_path / "runs", task, "surnn", s, a)
    out = tmp_path / "tables"
    assert make_tables.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    md = (out / "lra.md").read_text()
    row = next(l for l in md.splitlines() if l.startswith("| surnn |"))
    assert "42.00 ± 2.83 (2)" in row
    assert row.rstrip().endswith("| 60.40 |")  # (42 + 60 + 70 + 50 + 80) / 5
    assert "suGRU (paper) | 44.93" in md  # published numbers, labelled
    data = json.loads((out / "lra.json").read_text())
    assert data["listops/surnn"]["update_rate"] == pytest.approx(0.4)
    assert data["listops/surnn"]["n_seeds"] == 2


def test_duplicate_seeds_and_empty_folders_fail_clearly(tmp_path):
    write_run(tmp_path / "a", "listops", "lstm", 0, 0.3)
    write_run(tmp_path / "b", "listops", "lstm", 0, 0.3)
    with pytest.raises(SystemExit, match="share seeds"):
        make_tables.main([str(tmp_path), "--out", str(tmp_path / "t")])
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tables.py"), str(tmp_path / "empty_missing")],
        capture_output=True,
        text=True,
    )
    assert p.returncode != 0 and "does not exist" in p.stderr


def test_variants_get_their_own_rows(tmp_path):
    """Ablations (same model, same seeds, different options) are rows of their own; runs
    written before the variant field existed keep the plain model row."""
    write_run(tmp_path / "a", "listops", "surnn", 0, 0.40)  # no variant field
    write_run(tmp_path / "b", "listops", "surnn", 0, 0.30, variant="gate.kind=soft")
    write_run(tmp_path / "c", "listops", "surnn", 1, 0.34, variant="gate.kind=soft")
    write_run(tmp_path / "d", "listops", "surnn", 0, 0.35, variant=None)
    with pytest.raises(SystemExit, match="share seeds.*variant=<label>"):
        make_tables.main([str(tmp_path), "--out", str(tmp_path / "t")])
    (tmp_path / "d" / "listops-surnn-s0" / "results.json").unlink()
    out = tmp_path / "t"
    assert make_tables.main([str(tmp_path), "--out", str(out)]) == 0
    rows = {
        l.split("|")[1].strip(): l
        for l in (out / "lra.md").read_text().splitlines()
        if l.startswith("| surnn")
    }
    assert "40.00 (1)" in rows["surnn"]
    assert "32.00 ± 2.83 (2)" in rows["surnn [gate.kind=soft]"]
    data = json.loads((out / "lra.json").read_text())
    assert data["listops/surnn [gate.kind=soft]"]["variant"] == "gate.kind=soft"


def test_variant_from_overrides():
    from surnn.harness.cli import variant_from_overrides

    assert variant_from_overrides(["task=listops", "model=surnn", "seed=1"]) is None
    assert (
        variant_from_overrides(
            ["model=surnn", "model.options.gate.kind=soft", "+model.d_model=32", "trainer=smoke"]
        )
        == "d_model=32,gate.kind=soft"
    )


def test_pixel_level_runs_get_their_own_table_with_published_numbers(tmp_path):
    write_run(tmp_path / "r", "smnist", "surnn", 0, 0.99)
    write_run(tmp_path / "r", "scifar", "surnn", 0, 0.80)
    write_run(tmp_path / "r", "listops", "surnn", 0, 0.40)
    out = tmp_path / "t"
    assert make_tables.main([str(tmp_path / "r"), "--out", str(out)]) == 0
    md = (out / "lra.md").read_text()
    lra, pixel = md.split("## Pixel-level benchmarks")
    assert "| Model | listops | Avg |" in lra and "smnist" not in lra.split("Published")[0]
    assert "| Model | smnist | scifar |" in pixel
    assert "| surnn | 99.00 (1) | 80.00 (1) |" in pixel
    assert "| suGRU (paper) | 99.53 | 98.46 | 87.26 |" in pixel
    assert "binary 70.43, soft 59.44" in lra
