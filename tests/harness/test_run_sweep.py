"""run.py sweeps: a Hydra multirun through submitit's local launcher, its tables, and
scripts/check_results.py rerunning one of its jobs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.fixtures import ROOT, TINY_RUN, load_script, run_py_env


@pytest.fixture(scope="module")
def sweep(tmp):
    """The SLURM path minus SLURM: Hydra multirun through submitit's local executor, into
    a sweep folder outside output_dir (as scripts/reproduce.py sweeps)."""
    env = run_py_env()
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "hydra/launcher=local",
        f"data_dir={tmp / 'data'}",
        f"output_dir={tmp / 'out'}",
        f"hydra.sweep.dir={tmp / 'swept'}",
        "task=listops",
        "model=lstm,gru",
        "trainer=smoke",
        *TINY_RUN,
    ]
    p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout + p.stderr, sorted((tmp / "swept").glob("listops-*-s0-*"))


def test_sweep_through_submitit_launcher_then_tables(sweep):
    said, jobs = sweep
    assert "sweep job 1/2" in said and "sweep job 2/2" in said, said[-3000:]
    assert [j.name.split("-")[1] for j in jobs] == ["gru", "lstm"]
    for job in jobs:  # each progress line names the job's run folder, its command reruns it
        assert f"-> {job}" in said, said[-3000:]
        res = json.loads((job / "results.json").read_text())
        # the job's folder is output_dir/run_id, in its command and its saved config alike
        assert res["run_id"] == job.name, res["run_id"]
        assert res["command"].endswith(f" output_dir={job.parent} run_id={job.name}")
        saved = OmegaConf.load(job / "config.yaml")
        assert (saved.output_dir, saved.run_id) == (str(job.parent), job.name)
        assert res["command"].startswith(f"python {ROOT / 'run.py'} data_dir=")
        assert f" model={job.name.split('-')[1]} " in res["command"], res["command"]
    out = jobs[0].parents[1] / "tables"
    # in this process (its command line: tests/scripts/test_make_tables.py)
    assert load_script("make_tables").main([str(jobs[0].parent), "--out", str(out)]) == 0
    md = (out / "lra.md").read_text()
    assert "| gru |" in md and "| lstm |" in md


def test_check_results_reruns_one_sweep_job_and_says_per_folder_what_reproduces(
    tmp, sweep, monkeypatch, capsys
):
    """scripts/check_results.py on a sweep job's results.json (its command reruns that job
    alone, as run.py in a subprocess): the same command, commit and threads give the same
    numbers; a changed number is reported, the folder it is in does not reproduce, and the
    exit status is 1. The script runs in this process; its two result files hold one
    command, so the second rerun is the first's result (the comparison is what differs)."""
    job = next(j for j in sweep[1] if "-gru-" in j.name)
    res = json.loads((job / "results.json").read_text())
    same, changed = tmp / "committed" / "same", tmp / "committed" / "changed"
    for folder in (same, changed):
        folder.mkdir(parents=True, exist_ok=True)
    (same / "gru.json").write_text(json.dumps(res))
    (changed / "gru.json").write_text(json.dumps({**res, "test_acc": res["test_acc"] + 0.01}))
    cr = load_script("check_results")
    reruns, real = {}, cr.rerun

    def rerun_once(old, out_dir, data_dir, pin_kernel=True):
        key = (old.command, data_dir, pin_kernel)
        if key not in reruns:
            reruns[key] = real(old, out_dir, data_dir, pin_kernel)
        return reruns[key]

    monkeypatch.setattr(cr, "rerun", rerun_once)
    code = cr.main([str(same), str(changed), "--runs-dir", str(tmp / "rerun")])
    out = capsys.readouterr().out
    assert code == 1 and len(reruns) == 1, out[-3000:]
    assert f"rerun: {ROOT / 'run.py'} data_dir=" in out and " model=gru " in out
    assert f"{same}: reproduces (1 of 1 result(s) the same)" in out, out
    assert "test_acc: committed" in out and "1 of 2 result(s) reproduced" in out
    said = f"{changed}: does NOT reproduce (0 of 1 result(s) the same; different: gru.json"
    assert said in out, out[-3000:]
