"""Sweeps through the SLURM launcher against stub SLURM commands that run the jobs here
(tests/harness/slurm_stub.py): a 2-task DDP job that is preempted, requeued and resumed
gives the single-process numbers; a bad value stops the sweep before anything is queued;
a multi-node job's ranks and master come from SLURM's variables."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import TINY_LISTOPS, train_here

ROOT = Path(__file__).resolve().parents[2]
STUB = Path(__file__).with_name("slurm_stub.py")
HOOKS = Path(__file__).with_name("hooks")
TINY = [*TINY_LISTOPS, "logger=none", "device=cpu", "model=lstm", "model.dropout=0.0"]
STEPS = ["trainer=smoke", "trainer.max_steps=6", "trainer.eval_every=3", "trainer.ckpt_every=3"]
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.tasks_per_node=2",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """The stub commands first on PATH, their state in tmp_path/slurm."""
    subprocess.run([sys.executable, str(STUB), "install", str(tmp_path / "bin")], check=True)
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "SLURM_STUB_DIR": str(tmp_path / "slurm"),
        "PYTHONPATH": str(ROOT),
        "MASTER_PORT": str(_free_port()),  # never the port another test run draws
    }
    for key in [k for k in env if k.startswith(("SLURM_", "SUBMITIT_")) and k != "SLURM_STUB_DIR"]:
        del env[key]
    return env


def _run_py(args, tmp, env, timeout=600):
    args = [*args, f"data_dir={tmp / 'data'}", f"output_dir={tmp / 'out'}"]
    if "hydra/launcher=slurm" in args:
        args.append(f"hydra.launcher.submitit_folder={tmp / 'submitit'}")
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ended(job_file: Path, timeout: float = 120) -> dict:
    """The stub job's state once it has ended: submitit returns as soon as the job wrote
    its result, a moment before the stub's runner sees the job script exit and records
    COMPLETED."""
    deadline = time.time() + timeout
    while True:
        state = json.loads(job_file.read_text())
        if state["state"] not in ("PENDING", "RUNNING", "REQUEUED") or time.time() > deadline:
            return state
        time.sleep(0.2)


def _train_losses(folder: Path) -> list[float]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(l)["train/loss"] for l in lines if "train/loss" in l]


def test_ddp_job_on_slurm_is_preempted_requeued_and_gives_the_single_process_numbers(
    tmp_path, cluster, monkeypatch
):
    """A job of 2 tasks (one DDP run of 2 gloo ranks): rank 0 has SLURM signal the job
    (USR2) after step 3; every rank stops at one step, last.pt is saved, submitit requeues
    (scontrol), the job runs again as one job and resumes at step 3. The single-process
    reference trains in this process (as run.py trains it)."""
    env = {
        **cluster,
        "PYTHONPATH": f"{HOOKS}{os.pathsep}{ROOT}",
        "SURNN_TEST_PREEMPT_AT_STEP": "3",
    }
    p = _run_py(["-m", *SLURM, "task=listops", *STEPS, *TINY, "optim.lr=3e-3"], tmp_path, env)
    assert p.returncode == 0, p.stderr[-4000:]
    sweep = next((tmp_path / "out" / "sweeps").iterdir())
    job = sweep / "listops-lstm-s0-0"
    said = p.stdout + p.stderr
    assert "sweep job 1/1 (#0 " in said and f"-> {job}" in said, said[-3000:]

    state = _ended(tmp_path / "slurm" / "job-1000.json")
    assert state["restarts"] == 1 and state["state"] == "COMPLETED"  # requeued once, as one job
    log0 = "".join((tmp_path / "submitit" / f"1000_0_log.{x}").read_text() for x in ("out", "err"))
    assert "saved last.pt at step 3" in log0 and "resumed from" in log0 and "at step 3" in log0
    assert "To resume this run: torchrun --nproc_per_node=2" in log0

    res = json.loads((job / "results.json").read_text())
    assert res["world_size"] == 2 and res["steps"] == 6
    assert res["command"].startswith("torchrun --nproc_per_node=2 ")
    assert res["command"].endswith(f"run_id=sweeps/{sweep.name}/{job.name}")
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(key)  # one process, as the cluster fixture's environment has it
    single = ["task=listops", *STEPS, *TINY, "optim.lr=3e-3", f"data_dir={tmp_path / 'data'}"]
    train_here(single, tmp_path / "out", "single")
    ref = json.loads((tmp_path / "out" / "single" / "results.json").read_text())
    for key in ("best_step", "best_val_acc", "test_acc", "test_examples", "steps"):
        assert res[key] == ref[key], (key, res[key], ref[key])
    assert res["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-6)
    # one line per step although steps 4.. ran after the requeue
    assert _train_losses(job) == pytest.approx(_train_losses(tmp_path / "out" / "single"), rel=1e-5)


def test_a_bad_value_in_a_sweep_stops_it_before_any_job_runs_or_queues(tmp_path, cluster):
    """Every job's config is checked before the first is queued (the same check runs
    before Hydra's basic launcher runs the first job in this process)."""
    p = _run_py(
        [
            "-m",
            *SLURM,
            "task=listops",
            "model=surnn",
            "trainer=smoke",
            "logger=none",
            "model.options.gate.init_rate=0.5,2,0.3",
        ],
        tmp_path,
        cluster,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr[-3000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1, p.stderr
    assert err[0].startswith("error: sweep job #1 of 3 (model.options.gate.init_rate=2): "), err
    assert "expected a number in (0, 1]" in err[0]
    assert not (tmp_path / "out").exists()  # no sweep folder, no job folder
    assert not (tmp_path / "slurm").exists() and not (tmp_path / "submitit").exists()


def test_a_multi_node_job_takes_rank_world_and_master_from_slurm(monkeypatch):
    """Task 3 of a job of 2 nodes x 2 tasks: the variables torch.distributed reads."""
    from surnn.harness.run import export_slurm_ddp_env

    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(key)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.setenv(key, "")  # recorded, so the test's exports are undone after it
        monkeypatch.delenv(key)
    monkeypatch.setenv("MASTER_PORT", "29123")
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "77",
        "SLURM_NTASKS": "4",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
    }
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    assert export_slurm_ddp_env()
    got = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    assert got == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] == "29123"
    assert not export_slurm_ddp_env()  # WORLD_SIZE is set now: nothing to do
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.delenv("WORLD_SIZE")
    assert not export_slurm_ddp_env()  # one task: one process, no DDP
