"""surnn.harness.results.RunResult: results.json as one typed record. Written, read back and
written again it is the same file; every committed run result loads and writes back byte for
byte (older files lack keys: they stay absent); unknown keys are kept."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from surnn.harness.results import CLASSIFY_FIELDS, FLOPS_FIELDS, RunResult

ROOT = Path(__file__).resolve().parents[2]


def committed_runs() -> list[Path]:
    """Every run result under results/ (a results.json or a committed copy of one)."""
    out = []
    for f in sorted((ROOT / "results").rglob("*.json")):
        d = json.loads(f.read_text())
        if isinstance(d, dict) and "command" in d and ("test_acc" in d or "metric_name" in d):
            out.append(f)
    return out


def a_run(**kw) -> RunResult:
    """A classification run's record with every field set."""
    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(RunResult)}
    for name in ("omitted", "extra", "path"):
        values.pop(name)
    values.update(objective="classify", metric_name="acc", test_metric=0.5, best_val_acc=0.25)
    values.update(update_rate={"layer0": 0.17}, best_val_metric=float("nan"), **kw)
    return RunResult(**values)


def test_every_committed_run_result_loads_and_writes_back_unchanged():
    files = committed_runs()
    assert len(files) >= 50, [f.name for f in files]
    for f in files:
        r = RunResult.load(f)
        assert r.to_json() == f.read_text(), f
        assert not r.extra, (f, sorted(r.extra))  # every committed key is a field
        assert r.task and r.model and r.seed is not None and r.test_metric is not None, f
        assert r.test_metric == json.loads(f.read_text())[r.test_metric_key]


def test_older_files_load_with_the_keys_they_lack_as_none():
    demo = RunResult.load(ROOT / "results" / "demo" / "gru.json")  # no kernel, gate_holders, data
    assert demo.kernel is None and demo.gate_holders is None and demo.data is None
    assert {"kernel", "gate_holders", "data"} <= demo.omitted
    assert not demo.has("kernel") and demo.has("test_acc") and demo.test_acc == demo.test_metric
    assert demo.run_dir == ROOT / "results" / "demo"


def test_write_load_write_is_identical(tmp_path):
    r = a_run()
    path = tmp_path / "results.json"
    r.save(path)
    back = RunResult.load(path)
    assert back.to_json() == path.read_text() == r.to_json()
    assert math.isnan(back.best_val_metric) and back.omitted == frozenset() and not back.extra
    keys = back.keys()
    assert keys[keys.index("best_step") + 1] == "test_acc"  # test_<metric_name>, in place
    assert keys[-len(CLASSIFY_FIELDS) - len(FLOPS_FIELDS) :] == [*CLASSIFY_FIELDS, *FLOPS_FIELDS]


def test_unknown_keys_are_kept_and_written_after_the_known_ones(tmp_path):
    d = {**a_run().to_dict(), "from_a_newer_version": [1, 2]}
    r = RunResult.from_json(d)
    assert r.extra == {"from_a_newer_version": [1, 2]}
    assert r.to_dict() == d and r.keys()[-1] == "from_a_newer_version"


@pytest.mark.parametrize(
    "objective, metric, key", [("tokens", "acc", "test_acc"), ("regress", "mse", "test_mse")]
)
def test_classify_fields_only_for_classify_and_flops_only_when_counted(objective, metric, key):
    r = a_run(objective=objective, metric_name=metric, flops_per_seq=None)
    keys = r.keys()
    assert key in keys and not set(CLASSIFY_FIELDS) & set(keys)
    assert not set(FLOPS_FIELDS) & set(keys)
    assert r.test_acc == (0.5 if metric == "acc" else None)
    assert RunResult.from_json(r.to_dict()).to_json() == r.to_json()


def test_a_language_models_metric_is_its_test_loss_key_written_once():
    """lm's metric is the loss: test_<metric_name> is test_loss, at the metric's place."""
    r = a_run(objective="lm", metric_name="loss", test_metric=3.5, test_loss=3.5)
    keys = r.keys()
    assert keys.count("test_loss") == 1 and keys[keys.index("best_step") + 1] == "test_loss"
    back = RunResult.from_json(json.loads(r.to_json()))
    assert back.test_metric == back.test_loss == 3.5 and back.to_json() == r.to_json()
