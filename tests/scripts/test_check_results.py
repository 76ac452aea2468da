"""scripts/check_results.py: how a result is rerun (its environment, arguments and folder),
and --update, where every rerun runs before any committed file is written. A rerun of a
real sweep job: tests/harness/test_run_sweep.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from surnn.harness.results import RunResult
from tests.fixtures import load_script

COMMITTED = {
    "task": "listops",
    "model": "gru",
    "seed": 0,
    "objective": "classify",
    "metric_name": "acc",
    "test_acc": 0.4,
    "git_commit": "0ld",
    "command": "python run.py experiment=demo_listops model=gru",
}

DATA = {  # a rerun's data as ListOps describes it: the paths are this machine's
    "name": "listops",
    "max_len": 160,
    "source": "generated",
    "files": ["/data/listops-gen-e6a1dbfcfdd1/listops-1000/basic_train.tsv"],
    "cache": "/data/cache/listops/0a1b",
    "generate": {"seed": 0, "min_length": 20, "max_length": 150, "max_depth": 5},
}


def committed(folder: Path, names: list[str]) -> dict[Path, bytes]:
    folder.mkdir(parents=True)
    files = {}
    for name in names:
        f = folder / f"{name}.json"
        f.write_text(json.dumps({**COMMITTED, "run_id": name}))
        files[f] = f.read_bytes()
    return files


def test_update_writes_every_file_after_the_last_rerun(tmp_path, monkeypatch, capsys):
    """The fake rerun records the commit a real one would: ``-dirty`` once a committed file
    in the tree it reruns from was modified. Every rerun finds the files as committed, so
    each updated file records the clean commit, and of the rerun's data only what is not
    machine-local."""
    cr = load_script("check_results")
    files = committed(tmp_path / "results", ["a", "b", "c"])
    seen = []

    def rerun(old, out_dir, data_dir, pin_kernel=True):
        modified = [f.name for f, text in files.items() if f.read_bytes() != text]
        seen.append(modified)
        commit = "c1ean" + ("-dirty" if modified else "")
        fresh = dict(test_metric=0.5, git_commit=commit, data=DATA, omitted=frozenset())
        return dataclasses.replace(old, **fresh)  # as a rerun's results.json loads

    monkeypatch.setattr(cr, "rerun", rerun)
    monkeypatch.setattr("surnn.provenance.git_commit", lambda *a, **k: "c1ean")
    code = cr.main([str(tmp_path / "results"), "--update", "--runs-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 0 and seen == [[], [], []], out
    for f in files:
        d = json.loads(f.read_text())
        assert d["git_commit"] == "c1ean" and d["test_acc"] == 0.5
        assert d["command"] == COMMITTED["command"]
        kept = {"name": "listops", "max_len": 160, "generate": DATA["generate"]}
        assert d["data"] == {**kept, "generated": True}  # no paths
    assert "WARNING" not in out


def test_update_names_failed_reruns_and_dirty_commits(tmp_path, monkeypatch, capsys):
    """A failed rerun leaves its file as committed, the others are written at the end, and
    the exit status is 1; an update from a tree with uncommitted changes is warned about
    before the first rerun and once per file written, naming the file and its ``-dirty``
    commit."""
    cr = load_script("check_results")
    files = committed(tmp_path / "results", ["a", "b", "c"])
    calls = []

    def rerun(old, out_dir, data_dir, pin_kernel=True):
        calls.append(old.run_id)
        if old.run_id == "b":
            raise RuntimeError("the rerun failed (exit 1):\nboom")
        return dataclasses.replace(old, test_metric=0.5, git_commit="d1rty-dirty")

    monkeypatch.setattr(cr, "rerun", rerun)
    monkeypatch.setattr("surnn.provenance.git_commit", lambda *a, **k: "d1rty-dirty")
    code = cr.main([str(tmp_path / "results"), "--update", "--runs-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    a, b, c = files
    assert code == 1 and calls == ["a", "b", "c"], out
    assert b.read_bytes() == files[b]  # left as committed
    assert f"NOT updated, rerun failed (1): {b}" in out
    for f in (a, c):
        assert json.loads(f.read_text())["git_commit"] == "d1rty-dirty"
        assert f"WARNING: {f} records d1rty-dirty" in out
    assert "WARNING: this tree has uncommitted changes (d1rty-dirty)" in out
    assert out.count("WARNING: ") == 3, out


def test_check_results_reruns_with_the_kernel_a_result_records(monkeypatch):
    """The rerun pins impl=auto's CPU choice to the recorded ``kernel``; a result without
    one is from a commit whose auto runs the eager path; ``--update`` takes this tree's default."""
    cr = load_script("check_results")
    monkeypatch.setenv("SURNN_AUTO_COMPILED", "0")
    saved = RunResult.from_json  # a results.json's content
    old = cr.rerun_env(saved({"threads": 2}))
    assert old["SURNN_AUTO_COMPILED"] == "0" and old["OMP_NUM_THREADS"] == "2"
    assert cr.rerun_env(saved({"kernel": "compiled"}))["SURNN_AUTO_COMPILED"] == "1"
    assert cr.rerun_env(saved({"kernel": "cpu"}))["SURNN_AUTO_COMPILED"] == "0"
    assert "SURNN_AUTO_COMPILED" not in cr.rerun_env(saved({"kernel": None}))  # a baseline
    assert "SURNN_AUTO_COMPILED" not in cr.rerun_env(saved({}), pin_kernel=False)
    cmd = "python run.py experiment=demo_listops hydra.run.dir=/tmp/g8 output_dir=o"
    assert cr.rerun_args(RunResult(command=cmd), Path("/r"), None) == [
        "experiment=demo_listops",
        "output_dir=/r",
        "trainer.progress=false",
    ]  # the rerun's folder, not the recorded hydra.run.dir


def test_check_results_rerun_folders_are_one_hydra_value():
    """A committed result named like the surrogate study's (``surrogate=triangle,width=0.1-s0``)
    is rerun into a folder whose ``output_dir=...`` override Hydra reads as one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cr = load_script("check_results")
    folder = cr.rerun_folder(Path("/r"), 3, "surrogate=triangle,width=0.1-s0")
    assert folder == Path("/r/3-surrogate_triangle_width_0.1-s0")
    (o,) = OverridesParser.create().parse_overrides([f"output_dir={folder}"])
    assert o.value() == str(folder)


def test_a_result_that_differs_names_this_cpu_and_where_to_rerun(tmp_path, monkeypatch, capsys):
    """A rerun that differs fails (exit 1) and the end names this machine's CPU and
    instruction set: a result made on another instruction set can differ without a change
    of code."""
    import torch

    cr = load_script("check_results")
    committed(tmp_path / "results", ["a"])

    def rerun(old, out_dir, data_dir, pin_kernel=True):
        return dataclasses.replace(old, test_metric=0.41, git_commit="n3w")

    monkeypatch.setattr(cr, "rerun", rerun)
    code = cr.main([str(tmp_path / "results"), "--runs-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "DIFFERENT" in out and "does NOT reproduce" in out, out
    assert torch.backends.cpu.get_cpu_capability() in out.splitlines()[-1], out
    assert "another instruction set" in out.splitlines()[-1], out
