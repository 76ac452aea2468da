"""scripts/make_figures.py: each figure from a tiny fake run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from surnn.layer import SelectiveUpdateGRU
from tests.fixtures import load_script, write_run_folder

make_figures = load_script("make_figures")


def fake_run(root: Path, name: str, variant: str | None, rate: float, acc: float) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    gate = {"kind": "rhythm", "init_rate": rate, "target_rate": rate}
    rnn = SelectiveUpdateGRU(4, 6, num_layers=1, batch_first=True, gate=gate, impl="reference")
    rnn(torch.randn(2, 30, 4))  # one training forward steers the offset
    state = {
        f"encoder.blocks.{i}.mixer.rnn.{k}": v for i in (0, 1) for k, v in rnn.state_dict().items()
    }
    torch.save({"model": state, "step": 4}, run / "checkpoints" / "best.pt")
    res = {
        "task": "listops",
        "model": "surnn",
        "seed": 0,
        "variant": variant,
        "test_acc": acc,
        "update_rate": {"layer0": rate, "layer1": rate},
        "data": {"max_len": 30},
    }
    rows = [
        {
            "step": s,
            "train/loss": 2.0 / s,
            "train/layer0/update_rate": rate,
            "train/layer1/update_rate": rate,
        }
        for s in (1, 2, 3, 4)
    ]
    rows += [{"step": s, "val/acc": 0.1 * s} for s in (2, 4)]
    return write_run_folder(run, res, rows)


def _png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_raster_and_learned_periods(tmp_path):
    run = fake_run(tmp_path / "runs", "a", None, 0.3, 0.4)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=False)["model"]
    layers = make_figures.gate_layers(state)
    assert len(layers) == 2  # one rhythm gate per block
    g, periods = make_figures.rhythm(next(iter(layers.values())), 30)
    assert g.shape == (30, 6) and periods.shape == (6,)
    assert abs(float(g.float().mean()) - 0.3) < 0.05  # the steered offset is included
    assert make_figures.main(["gate", str(run), "--out", str(tmp_path / "f")]) == 0
    assert _png(tmp_path / "f" / "gate_a.png")


def test_rates_acc_rate_and_curves(tmp_path):
    fake_run(tmp_path / "runs", "a", "gate=binary", 0.17, 0.4)
    fake_run(tmp_path / "runs", "b", "gate=open", 1.0, 0.45)
    out = tmp_path / "f"
    for fig, stem in (
        ("rates", "update_rate_over_training"),
        ("acc-rate", "accuracy_vs_update_rate"),
        ("curves", "learning_curves"),
    ):
        paths = [str(tmp_path / "runs" / "a")] if fig == "rates" else [str(tmp_path / "runs")]
        assert make_figures.main([fig, *paths, "--out", str(out)]) == 0
        assert _png(out / f"{stem}.png"), fig


def test_missing_inputs_fail_clearly(tmp_path):
    with pytest.raises(SystemExit, match="no results.json"):
        make_figures.main(["curves", str(tmp_path), "--out", str(tmp_path / "f")])
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no best.pt or last.pt"):
        make_figures.main(["gate", str(tmp_path / "r"), "--out", str(tmp_path / "f")])
