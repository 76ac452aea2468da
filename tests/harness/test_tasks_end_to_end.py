"""Every data task through the registry into the backbone, prepare_data on an empty
folder, and a smoke run (as run.py trains) on generated Pathfinder data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from surnn.harness.backbone import Model
from surnn.harness.registry import TASKS
from tasks.formats import random_images, write_pathfinder_pngs
from tasks.generators import pathfinder as gen
from tests.fixtures import load_script, train_here, write_raw

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lra")
    write_raw(d, "text", "retrieval", "image", "smnist")
    gen.generate(d, 32, "hard", n=20, seed=0, workers=1, fmt="release", progress=False)
    imgs, y = random_images(10, 128)
    write_pathfinder_pngs(d, "pathfinder128/curv_contour_length_14", imgs, y)
    return d


CASES = [
    ("text", {"max_len": 256, "hub": False}, "tokens"),
    ("retrieval", {"max_len": 128}, "tokens"),
    ("image", {"val_size": 4, "hub": False}, "tokens"),
    ("image", {"val_size": 4, "hub": False, "input": "values"}, "values"),
    ("pathfinder", {}, "tokens"),
    ("pathfinder", {"input": "values"}, "values"),
    ("pathx", {}, "tokens"),
    ("smnist", {"val_size": 4, "hub": False}, "values"),
    ("psmnist", {"val_size": 4, "hub": False, "input": "tokens"}, "tokens"),
    ("scifar", {"val_size": 4, "hub": False}, "values"),
]


@pytest.mark.parametrize("name, options, kind", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_lstm_forward_on_each_task(data, name, options, kind):
    torch.manual_seed(0)
    task = TASKS.get(name)(data_dir=data, **options)
    s = task.splits()
    assert task.input_kind == kind
    items = [s.train[i] for i in range(1 if name == "pathx" else 3)]  # pathx: 16k LSTM steps
    batch = s.collate(items)
    model = Model(task, mixer="lstm", mixer_options={}, d_model=16, n_layers=1).eval()
    with torch.no_grad():
        logits, aux = model(batch)
    assert logits.shape == (len(items), task.n_classes)
    assert torch.isfinite(logits).all()
    assert batch["x"].shape[1] <= task.max_len
    d = task.describe()
    assert d["encoding"] and d["max_len"] == task.max_len


def test_prepare_data_on_empty_folder_prints_instructions(tmp_path, capsys):
    """In this process (the command line: test_prepare_data_counts_and_builds_caches)."""
    prepare = load_script("prepare_data")
    assert prepare.main(["--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for task in prepare.TASKS:
        row = next(ln for ln in lines if ln.startswith(task + " "))
        assert " missing " in row
    assert f"--resolution 128 --difficulty hard --n 200000 --out {tmp_path}" in out
    assert "aclImdb_v1.tar.gz" in out and "cifar-10-python.tar.gz" in out
    assert "ossci-datasets" in out  # where MNIST's IDX files come from


def test_prepare_data_checks_only_registry_tasks():
    checks = load_script("prepare_data").CHECKS
    assert set(checks) <= set(TASKS), f"checks of unknown tasks: {set(checks) - set(TASKS)}"


def test_prepare_data_counts_and_builds_caches(data, capsys):
    """Through its command line, then (without --build-cache) in this process."""
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "prepare_data.py"),
            "--data-dir",
            str(data),
            "--build-cache",
            "--tasks",
            "retrieval",
            "pathfinder",
            "pathx",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "train 4 / val 2 / test 2 (release: 147,086 / 18,090 / 17,437)" in out
    assert "20 metadata lines, 20 PNGs" in out and "cache 16/2/2" in out
    assert "pathx       found" in out and "cache 8/1/1" in out
    capsys.readouterr()
    assert (
        load_script("prepare_data").main(["--data-dir", str(data), "--tasks", "smnist", "scifar"])
        == 0
    )
    assert "train 12 / test 4 (release: 60,000 / 10,000)" in capsys.readouterr().out


@pytest.mark.slow
def test_smoke_run_on_generated_pathfinder(data, tmp_path):
    """A smoke run as run.py trains it, in this process (run.py's command line: test_run.py)."""
    args = ["task=pathfinder", "model=lstm", "model.d_model=16", "model.n_layers=1"]
    train_here([*args, "logger=none", "trainer=smoke", f"data_dir={data}"], tmp_path / "out", "pf")
    (res_file,) = (tmp_path / "out").rglob("results.json")
    res = json.loads(res_file.read_text())
    assert res["task"] == "pathfinder" and 0.0 <= res["test_acc"] <= 1.0
