"""run.py interrupted and resumed: kill -9 and SIGTERM (to the run or its whole process
group) resume to the uninterrupted run's numbers, the default run id names the
configuration so a rerun resumes, and a second run on a folder in use is refused."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surnn.harness.run import remove_if_only_hydra
from tests.fixtures import ROOT, TINY_RUN, run_error, run_in_tmp, run_py_env

HOOKS = Path(__file__).with_name("hooks")

COMMON = [
    "task=listops",
    "model=surnn",
    "trainer=smoke",
    "trainer.max_steps=16",
    "trainer.ckpt_every=4",
    "trainer.eval_every=4",
    "trainer.max_train_examples=null",
    "model.dropout=0.1",
    *TINY_RUN,
]


@pytest.fixture(scope="module")
def straight(tmp):
    ref = run_in_tmp([*COMMON, "run_id=straight"], tmp)
    assert ref.returncode == 0, ref.stderr[-3000:]
    return json.loads((tmp / "out" / "straight" / "results.json").read_text())


def _as_from_a_terminal() -> None:
    """In the child: SIGINT as a command typed in a terminal has it (a suite started in the
    background, ``make test &``, would pass on its SIGINT ignored, and an ignored Ctrl-C
    stays ignored by design)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(
    tmp, run_id: str, sig: int, at_step: int, group: bool = False, extra=()
) -> subprocess.Popen:
    """Start a run, signal it once it has logged ``at_step`` (the whole process group,
    loader workers included, when ``group``: what SLURM and ``timeout`` do)."""
    env = run_py_env()
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        f"data_dir={tmp / 'data'}",
        f"output_dir={tmp / 'out'}",
        *COMMON,
        *extra,
        f"run_id={run_id}",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE if group else subprocess.DEVNULL,
        stderr=subprocess.PIPE if group else subprocess.DEVNULL,
        start_new_session=group,
        preexec_fn=_as_from_a_terminal,
    )
    metrics = tmp / "out" / run_id / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(
            json.loads(l).get("step", 0) >= at_step
            for l in metrics.read_text().splitlines()
            if l.endswith("}")
        ):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be interrupted"
    try:
        if group:
            os.killpg(proc.pid, sig)
            out, err = proc.communicate(timeout=120)
            proc.stdout_text = out.decode(errors="replace")  # the log (Hydra's console)
            proc.stderr_text = err.decode(errors="replace")
        else:
            os.kill(proc.pid, sig)
            proc.wait(timeout=120)
    except subprocess.TimeoutExpired:  # a hung run: end it (and its workers), then fail
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.communicate()
        raise
    assert not (tmp / "out" / run_id / "results.json").exists()
    return proc


def _assert_same(a: dict, b: dict) -> None:
    for k in ("best_val_acc", "best_step", "test_acc", "steps", "update_rate"):
        assert a[k] == b[k], k
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-6)


def test_kill_9_and_resume_matches_uninterrupted_run(tmp, straight):
    _interrupt(tmp, "killed", signal.SIGKILL, at_step=10)
    resumed = run_in_tmp([*COMMON, "run_id=killed"], tmp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(straight, json.loads((tmp / "out" / "killed" / "results.json").read_text()))
    steps = [
        json.loads(l)["step"]
        for l in (tmp / "out" / "killed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps), (
        "metrics.jsonl has lines from the killed process past the checkpoint"
    )


def test_sigterm_saves_last_checkpoint_then_resume_matches(tmp, straight):
    import torch

    proc = _interrupt(tmp, "preempted", signal.SIGTERM, at_step=5)
    assert proc.returncode == -signal.SIGTERM
    saved = torch.load(tmp / "out" / "preempted" / "checkpoints" / "last.pt", weights_only=False)
    assert 5 <= saved["step"] < 16  # written at the signal, not only every ckpt_every steps
    resumed = run_in_tmp([*COMMON, "run_id=preempted"], tmp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(straight, json.loads((tmp / "out" / "preempted" / "results.json").read_text()))


def test_sigterm_to_the_process_group_with_loader_workers_still_saves(tmp, straight):
    """SLURM preemption signals every process of the job, DataLoader workers included.
    The workers must not die first and crash the run ("DataLoader worker ... killed by
    signal: Terminated") before it writes last.pt."""
    import torch

    workers = ["trainer.num_workers=2"]
    proc = _interrupt(tmp, "group", signal.SIGTERM, at_step=5, group=True, extra=workers)
    assert "killed by signal" not in proc.stderr_text, proc.stderr_text[-3000:]
    assert proc.returncode == -signal.SIGTERM, proc.stderr_text[-3000:]
    saved = torch.load(tmp / "out" / "group" / "checkpoints" / "last.pt", weights_only=False)
    assert 5 <= saved["step"] < 16
    said = [l for l in proc.stdout_text.splitlines() if "To resume this run: " in l]
    assert len(said) == 1, proc.stdout_text[-3000:]
    words = shlex.split(said[0].split("To resume this run: ", 1)[1])
    assert words[0] == "python" and words[-1] == "run_id=group", words
    env = run_py_env()
    resumed = subprocess.run(  # the command the message gives, as it gives it
        [sys.executable, *words[1:]], cwd=tmp, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(resuming)" in resumed.stdout, resumed.stdout[-3000:]
    _assert_same(straight, json.loads((tmp / "out" / "group" / "results.json").read_text()))


def test_the_default_run_id_names_the_configuration_so_a_rerun_resumes():
    """`python run.py task=listops model=surnn` twice: the same folder (the second run
    resumes); a value that changes the computation gets another, one that does not
    (progress, workers, cadence of logs and checkpoints) the same."""
    import re

    from hydra import compose, initialize_config_dir

    from surnn.harness.cli import CONFIG_DIR
    from surnn.harness.config import config_key

    def run_id(*extra):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["task=listops", "model=surnn", *extra])
            return cfg.run_id, config_key(cfg)

    (a, key), (b, _) = run_id(), run_id()
    assert a == b and re.fullmatch(r"listops-surnn-s0-[0-9a-f]{8}", a) and a.endswith(key[:8])
    assert run_id("trainer.progress=false", "trainer.ckpt_every=7")[0] == a
    assert run_id("optim.lr=0.01")[0] != a and run_id("seed=1")[0].startswith("listops-surnn-s1-")


def test_two_runs_with_one_run_id_one_refuses_and_the_folder_stays_intact(tmp_path):
    """The first run waits as soon as it holds the lock (the hold-lock test hook) until the
    second has been refused, so it still holds it when the second starts, however fast
    either is; released, it ends as if alone."""
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {
        **run_py_env(),
        "PYTHONPATH": f"{HOOKS}{os.pathsep}{ROOT}",
        "SURNN_TEST_HOLD_LOCK": str(hold),
    }
    args = [*COMMON, "trainer.max_steps=40", "run_id=shared"]
    first = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run.py"),
            f"data_dir={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'out'}",
            *args,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = tmp_path / "out" / "shared"
    try:
        deadline = time.time() + 240
        while not (hold / "held").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if not (hold / "held").exists():
            first.kill()
            pytest.fail(f"the first run never held the lock: {first.communicate()[1][-2000:]}")
        # the second run, in this process: the line run.py prints, then what it removes
        data = f"data_dir={tmp_path / 'data'}"
        err = run_error([data, *args[:-1]], tmp_path / "out", "shared")
        assert not remove_if_only_hydra(folder)
    except BaseException:
        first.kill()
        first.wait(timeout=60)
        raise
    finally:
        (hold / "release").touch()
    assert f"pid {first.pid}" in err and "in use" in err, err
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    res = json.loads((folder / "results.json").read_text())
    assert res["steps"] == 40
    steps = [json.loads(l)["step"] for l in (folder / "metrics.jsonl").read_text().splitlines()]
    train = [
        json.loads(l)["step"]
        for l in (folder / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in l
    ]
    assert train == list(range(1, 41)) and steps == sorted(steps)
    assert not list((folder / "checkpoints").glob("*.tmp"))


def test_ctrl_c_to_the_process_group_saves_and_ends_without_a_traceback(tmp, straight):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground group, loader workers
    included: the run saves last.pt, says how to resume, and ends as interrupted by SIGINT
    (what a calling shell expects), with no KeyboardInterrupt traceback; the resumed run
    gives the uninterrupted run's numbers."""
    import torch

    workers = ["trainer.num_workers=2"]
    proc = _interrupt(tmp, "ctrl-c", signal.SIGINT, at_step=5, group=True, extra=workers)
    assert proc.returncode == -signal.SIGINT, proc.stderr_text[-3000:]
    assert "Traceback" not in proc.stderr_text, proc.stderr_text[-3000:]
    assert "interrupted (Ctrl-C)" in proc.stderr_text, proc.stderr_text[-3000:]
    assert "To resume this run: " in proc.stdout_text, proc.stdout_text[-3000:]
    saved = torch.load(tmp / "out" / "ctrl-c" / "checkpoints" / "last.pt", weights_only=False)
    assert 5 <= saved["step"] < 16
    resumed = run_in_tmp([*COMMON, "run_id=ctrl-c"], tmp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(straight, json.loads((tmp / "out" / "ctrl-c" / "results.json").read_text()))
