"""surnn.ops.bench and its settings (scripts/bench_surnn.py --suite targets): every training
row names its surrogate, the surrogate setting times the public layer as the presets train
it under straight-through and the triangle of each width, the JSON records the command as
typed. Structure only, never timings."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from surnn.ops import bench, bench_settings


@pytest.fixture()
def tiny_shapes(monkeypatch):
    monkeypatch.setattr(
        bench_settings,
        "SURROGATE_SHAPES",
        {"big": (2, 24, 8, 8, None), "demo": (3, 20, 8, 8, (4, 20))},
    )


def _run(tmp_path, settings, width=0.1) -> dict:
    out = tmp_path / "t.json"
    args = argparse.Namespace(
        impl="compiled", width=width, settings=settings, reps=1, threads=1, label="", out=out
    )
    bench.targets(args, tmp_path)
    return json.loads(out.read_text())


def test_surrogate_rows_name_the_presets_and_the_layers_default(tmp_path, tiny_shapes):
    meta = _run(tmp_path, ["surrogate"])
    rows = meta["rows"]
    assert {r["setting"] for r in rows} == {"surrogate big", "surrogate demo"}
    for setting in ("surrogate big", "surrogate demo"):
        rs = {r["surrogate"]: r for r in rows if r["setting"] == setting}
        # the presets' straight-through and the layer's default (triangle, width 1)
        assert list(rs) == ["ste", "triangle w=1", "triangle w=0.3", "triangle w=0.1"]
        assert rs["ste"]["surrogate_kind"] == "ste" and rs["ste"]["surrogate_width"] is None
        assert rs["triangle w=1"]["surrogate_width"] == 1.0
        assert all(r["baseline"] == "nn.GRU train" for r in rs.values())
        act = [rs[k]["case_train_active_rate"] for k in rs]
        assert act[0] == 1.0  # straight-through computes every update
        assert act[1] > act[2] > act[3] >= 0.16  # narrower: fewer closed neurons computed
        for r in rs.values():  # the rate control holds the presets' 0.17
            assert r["case_update_rate"] == pytest.approx(0.17, abs=0.02)
            assert r["vs_ste"] == pytest.approx(rs["ste"]["case_min_s"] / r["case_min_s"])
    assert meta["settings"]["surrogate demo"]["valid_fraction"] < 1  # padded, as the demo's
    md = (tmp_path / "t.md").read_text()
    assert "| demo | 3 | 20 | 8 | triangle w=0.3 |" in md and "| ste |" in md


def test_the_ops_training_rows_name_their_triangle_width(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_settings, "CROSSOVER_SHAPES", [((2, 24, 8, 8), (0.5,))])
    typed = ["scripts/bench_surnn.py", "--suite", "targets", "--settings", "crossover"]
    monkeypatch.setattr(sys, "argv", typed)
    meta = _run(tmp_path, ["crossover"], width=0.3)
    assert meta["command"] == "python " + " ".join(typed)  # as typed, not argparse's defaults
    train = [r for r in meta["rows"] if "train" in r["case"]]
    fwd = [r for r in meta["rows"] if "train" not in r["case"]]
    assert train and all(r["surrogate"] == "triangle w=0.3" for r in train)
    assert fwd and all("surrogate" not in r for r in fwd)
    assert "triangle surrogate of half-width 0.3" in meta["gate"]


def test_the_layers_per_call_overhead_is_reported_not_a_target(tmp_path, monkeypatch):
    """The stream setting's overhead row measures microseconds per call: it has no ratio to
    meet, and neither the JSON nor the Markdown says it met one."""
    monkeypatch.setattr(bench_settings, "STREAM_SHAPE", (1, 24, 1, 8))
    meta = _run(tmp_path, ["stream"])
    (row,) = [r for r in meta["rows"] if "overhead_us_per_call" in r]
    assert row["target"] is None and row["met"] is None
    md = (tmp_path / "t.md").read_text()
    (line,) = [ln for ln in md.splitlines() if "per-call overhead (layer vs op)" in ln]
    assert line.endswith("| – | (reported) |")
    targets = [r for r in meta["rows"] if r is not row]
    assert targets and all(r["target"] > 0 and r["met"] in (True, False) for r in targets)
