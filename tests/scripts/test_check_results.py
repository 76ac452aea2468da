"""scripts/check_results.py --update: every rerun runs before any committed file is written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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
