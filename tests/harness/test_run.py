"""End to end through run.py, as a user runs it: smoke runs, clear errors, kill -9 resume.

Each error contract of run.py's command line runs as a real process once (a value
precheck rejects: tests/harness/test_validate.py; a run that fails before it starts:
test_empty_split_file_...); its other cases are checked in this process through the
functions run.py calls (tests.fixtures.precheck_error and run_error), which give the
line run.py prints."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from surnn.harness.results import CLASSIFY_FIELDS, FLOPS_FIELDS, RunResult
from surnn.harness.run import HYDRA_FILES, remove_if_only_hydra
from tests.fixtures import (
    TINY_LISTOPS,
    load_script,
    precheck_error,
    run_error,
    run_py,
    train_here,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = [*TINY_LISTOPS, "logger=none"]
# results.json of a classification run with FLOPs counted: these keys, in this order (the
# classification and FLOPs fields last, as results.py groups them)
RESULT_KEYS = [
    "task",
    "model",
    "seed",
    "run_id",
    "steps",
    "objective",
    "metric_name",
    "metric_higher_is_better",
    "best_val_metric",
    "best_val_loss",
    "best_step",
    "test_acc",
    "test_metrics",
    "test_loss",
    "test_examples",
    "carry_state",
    "update_rate",
    "active_rate",
    "gate_holders",
    "params",
    "train_time_s",
    "eval_time_s",
    "step_time_s",
    "tokens_per_s",
    "peak_memory_bytes",
    "peak_memory_kind",
    "device",
    "threads",
    "world_size",
    "precision",
    "kernel",
    "git_commit",
    "torch",
    "date",
    "variant",
    "command",
    "data",
    "split_sizes",
    *CLASSIFY_FIELDS,
    *FLOPS_FIELDS,
]


def run(args, tmp, **kw):
    return run_py(
        argv(args, tmp),
        tmp,
        kw.get("timeout", 300),
    )


def argv(args, tmp) -> list[str]:
    """run()'s command line (run.py's arguments), for the checks made in this process."""
    return [f"data_dir={tmp / 'data'}", f"output_dir={tmp / 'out'}", *args]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


#: the model options of each smoke run: the suRNN run is a variant (two model.* overrides)
#: without dropout, so it is also the single-process reference of the DDP test
SMOKE = {"surnn": ["model.options.gate.init_rate=0.5", "model.dropout=0.0"], "lstm": []}


@pytest.fixture(scope="module")
def smoke(tmp):
    """smoke(model): the run folder of ``run.py task=listops model=<model> trainer=smoke``
    (SMOKE's options), run once per module."""
    done = {}

    def get(model: str) -> Path:
        if model not in done:
            args = ["task=listops", f"model={model}", "trainer=smoke", *TINY, *SMOKE[model]]
            p = run([*args, f"run_id=smoke-{model}"], tmp)
            assert p.returncode == 0, p.stderr[-3000:]
            done[model] = tmp / "out" / f"smoke-{model}"
        return done[model]

    return get


@pytest.mark.parametrize("model", ["surnn", "lstm"])
def test_smoke_run_writes_every_result_field(tmp, smoke, model):
    path = smoke(model) / "results.json"
    res = json.loads(path.read_text())
    assert list(res) == RESULT_KEYS
    assert RunResult.load(path).to_json() == path.read_text()  # read back, written the same
    assert res["task"] == "listops" and res["model"] == model and res["steps"] == 4
    # the variant: the model.* overrides, sorted
    assert res["variant"] == ("dropout=0.0,gate.init_rate=0.5" if model == "surnn" else None)
    assert res["test_examples"] == 21 and res["split_sizes"] == {"train": 64, "val": 20, "test": 21}
    assert res["flops_per_seq"] > 0 and res["flops_per_seq_dense"] >= res["flops_per_seq"]
    from surnn.ops import compiled

    # which implementation ran the suRNN layers (none for a baseline)
    want = "compiled" if compiled.available() else "cpu"
    assert res["kernel"] == (want if model == "surnn" else None)
    if model == "surnn":
        assert 0.0 < res["update_rate"]["layer0"] < 1.0
        # computed updates: the open ones plus those near threshold (bounded surrogate)
        assert res["update_rate"]["layer0"] <= res["active_rate"]["layer0"] <= 1.0
    lines = [
        json.loads(l)
        for l in (tmp / "out" / f"smoke-{model}" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in lines if "val/acc" in r] == [2, 4]
    assert (tmp / "out" / f"smoke-{model}" / "checkpoints" / "best.pt").exists()


def test_unknown_model_is_one_clear_line(tmp):
    err = precheck_error(argv(["model=nope"], tmp))
    assert "unknown model 'nope'" in err and "lstm" in err and "surnn" in err


def test_misspelt_key_is_one_clear_line(tmp):
    err = precheck_error(argv(["trainer.max_stepz=5", "logger=none"], tmp))
    assert "unknown key 'trainer.max_stepz'" in err and "trainer.max_steps?" in err


def test_bad_trainer_value_is_one_clear_line(tmp):
    """A value the schema's type rejects (Hydra's own error, reworded by precheck)."""
    err = precheck_error(
        argv(["trainer.max_steps=abc", "task=listops", "trainer=smoke", *TINY], tmp)
    )
    assert err.startswith("error: trainer.max_steps"), err


def test_corrupt_listops_row_is_one_clear_line(tmp):
    d = tmp / "corrupt" / "listops-1000"
    d.mkdir(parents=True)
    good = "( ( [MAX 2 ) 9 ) ]\t9\n"
    for split in ("train", "val", "test"):
        body = "Source\tTarget\n" + good * 8
        if split == "train":
            body += "( ( [MAX 2 ) 9 ) ]\tnine\n"
        (d / f"basic_{split}.tsv").write_text(body)
    args = [f"data_dir={tmp / 'corrupt'}", "task=listops", "trainer=smoke", "logger=none"]
    err = run_error(args, tmp / "out", "corrupt")
    assert err.startswith("error:") and "basic_train.tsv" in err and "10" in err, err
    folder = tmp / "out" / "corrupt"  # nothing but what run.py removes (Hydra's files)
    assert not folder.exists() or {p.name for p in folder.iterdir()} <= HYDRA_FILES


COMMON = [
    "task=listops",
    "model=surnn",
    "trainer=smoke",
    "trainer.max_steps=16",
    "trainer.ckpt_every=4",
    "trainer.eval_every=4",
    "trainer.max_train_examples=null",
    "model.dropout=0.1",
    *TINY,
]


@pytest.fixture(scope="module")
def straight(tmp):
    ref = run([*COMMON, "run_id=straight"], tmp)
    assert ref.returncode == 0, ref.stderr[-3000:]
    return json.loads((tmp / "out" / "straight" / "results.json").read_text())


def _interrupt(
    tmp, run_id: str, sig: int, at_step: int, group: bool = False, extra=()
) -> subprocess.Popen:
    """Start a run, signal it once it has logged ``at_step`` (the whole process group,
    loader workers included, when ``group``: what SLURM and ``timeout`` do)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
    if group:
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
        proc.stdout_text = out.decode(errors="replace")  # the log (Hydra's console handler)
        proc.stderr_text = err.decode(errors="replace")
    else:
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
    assert not (tmp / "out" / run_id / "results.json").exists()
    return proc


def _assert_same(a: dict, b: dict) -> None:
    for k in ("best_val_acc", "best_step", "test_acc", "steps", "update_rate"):
        assert a[k] == b[k], k
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-6)


def test_kill_9_and_resume_matches_uninterrupted_run(tmp, straight):
    _interrupt(tmp, "killed", signal.SIGKILL, at_step=10)
    resumed = run([*COMMON, "run_id=killed"], tmp)
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
    resumed = run([*COMMON, "run_id=preempted"], tmp)
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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


def _train_losses(folder: Path) -> list[float]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(l)["train/loss"] for l in lines if "train/loss" in l]


def test_torchrun_ddp_on_cpu_gives_the_single_process_numbers(tmp, smoke):
    """DDP (2 ranks on CPU) against one process on the same data and global batch (the
    suRNN smoke run): one run folder, every test example once, the same best step and test
    accuracy, train/loss the mean over the whole batch (not rank 0's half), and the same
    per-layer update/active rates (each rank sums its share weighted by its tokens; the
    sums are reduced before dividing)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    same = ["task=listops", "model=surnn", "trainer=smoke", *TINY, *SMOKE["surnn"]]
    single = smoke("surnn")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",  # a free port: another test run on this machine may hold 29500
            str(ROOT / "run.py"),
            f"data_dir={tmp / 'data'}",
            f"output_dir={tmp / 'out'}",
            *same,
            "run_id=ddp-2",
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    ddp = json.loads((tmp / "out" / "ddp-2" / "results.json").read_text())
    ref = json.loads((single / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["test_examples"] == 21
    for key in ("update_rate", "active_rate"):
        assert ddp[key].keys() == ref[key].keys() == {"layer0"}
        for layer, v in ref[key].items():
            assert ddp[key][layer] == pytest.approx(v, abs=1e-4), (key, ddp[key], ref[key])
    assert 0.0 < ddp["update_rate"]["layer0"] < 1.0
    assert "torch.distributed.run --nproc_per_node=2" in ddp["command"], ddp["command"]
    for key in ("best_step", "best_val_acc", "test_acc", "test_examples", "steps"):
        assert ddp[key] == ref[key], (key, ddp[key], ref[key])
    assert ddp["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-6)
    one, two = _train_losses(single), _train_losses(tmp / "out" / "ddp-2")
    assert len(one) == ref["steps"] and two == pytest.approx(one, rel=1e-5)


@pytest.fixture(scope="module")
def sweep(tmp):
    """The SLURM path minus SLURM: Hydra multirun through submitit's local executor, into
    a sweep folder outside output_dir (as scripts/reproduce.py sweeps)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
        *TINY,
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


def test_the_surnn_lra_preset_runs_a_smoke_step_and_holds_its_target_rate(tmp):
    """experiment=lra/listops_surnn (the paper's gate regime) as run.py composes and trains
    it (in this process), shrunk: the experiment's trainer keys win over trainer=smoke, so
    the step count is set here."""
    shrink = ["trainer.max_steps=3", "trainer.eval_every=3", "trainer.ckpt_every=3"]
    shrink += ["trainer.batch_size=4", "model.d_model=16", "model.n_layers=2"]
    args = ["experiment=lra/listops_surnn", "trainer=smoke", *shrink, *TINY]
    train_here([*args, f"data_dir={tmp / 'data'}"], tmp / "out", "preset")
    res = json.loads((tmp / "out" / "preset" / "results.json").read_text())
    assert res["steps"] == 3 and set(res["update_rate"]) == {"layer0", "layer1"}
    assert all(abs(r - 0.17) < 0.03 for r in res["update_rate"].values()), res["update_rate"]
    assert res["mixer_flops_per_seq"] < 0.5 * res["mixer_flops_per_seq_dense"]
    assert res["flops_examples"] == 20  # the whole validation set


# ------------------------------------------------------------- checked before anything runs


def test_unwritable_output_dir_is_one_line_exit_2_and_nothing_made(tmp_path):
    """/proc takes no new folder, even from root (as a read-only file system). precheck
    refuses it, so run.py exits before Hydra makes a folder anywhere."""
    out = "/proc/surnn-runs"
    args = [f"data_dir={tmp_path / 'data'}", f"output_dir={out}", "task=listops", "model=lstm"]
    err = precheck_error([*args, "trainer=smoke", *TINY])
    assert err.startswith(f"error: output_dir={out}: cannot write"), err
    assert not Path(out).exists()
    assert not any(tmp_path.iterdir())


def test_read_only_output_dir_is_refused_naming_the_folder(tmp_path, monkeypatch):
    """A read-only file system (EROFS) or a folder without write permission: the probe
    file cannot be made, and the message says where."""
    import errno
    import tempfile

    from surnn.errors import ConfigError
    from surnn.harness.validate import check_writable

    def refuse(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    run_dir = tmp_path / "out" / "some-run"
    with pytest.raises(ConfigError) as e:
        check_writable("output_dir", str(tmp_path / "out"), run_dir)
    assert str(e.value) == (
        f"output_dir={tmp_path / 'out'}: cannot write into {tmp_path} (Read-only file system); "
        "choose a writable output_dir"
    )
    monkeypatch.undo()
    check_writable("output_dir", str(tmp_path / "out"), run_dir)  # writable: no error
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing


@pytest.mark.parametrize(
    "bad",
    [
        ["trainer.batch_size=-4"],  # unchecked: hangs at 100% CPU, deaf to SIGTERM
        ["trainer.eval_every=0"],  # ZeroDivisionError
        ["optim.lr=-1"],  # a torch traceback
        ["trainer.max_steps=0"],  # a results.json with best_val_acc=-1
        ["data_dir=/etc/hostname"],  # FileExistsError
    ],
)
def test_bad_value_is_one_line_exit_2_and_no_run_folder(tmp_path, bad):
    """precheck refuses it: run.py prints this one line and exits 2 before Hydra makes a
    run folder (one real process checks that: tests/harness/test_validate.py)."""
    args = ["task=listops", "model=lstm", "trainer=smoke", "run_id=bad", *TINY, *bad]
    err = precheck_error(argv(args, tmp_path))
    assert err.startswith("error: "), err
    key = bad[0].split("=")[0]
    assert key in err and "expected" in err or "not a folder" in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_empty_split_file_is_one_line_and_no_run_folder(tmp_path):
    d = tmp_path / "data" / "listops-1000"
    d.mkdir(parents=True)
    good = "Source\tTarget\n" + "( ( [MAX 2 ) 9 ) ]\t9\n" * 8
    for split in ("train", "val", "test"):
        (d / f"basic_{split}.tsv").write_text("Source\tTarget\n" if split == "val" else good)
    p = run(
        ["task=listops", "trainer=smoke", "model=lstm", "logger=none", "run_id=empty"], tmp_path
    )
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith("error:") and "basic_val.tsv" in err[-1] and "no rows" in err[-1]
    assert not (tmp_path / "out" / "empty").exists()


def test_two_runs_with_one_run_id_one_refuses_and_the_folder_stays_intact(tmp_path):
    """The first run is stopped (SIGSTOP) as soon as it holds the lock, so it still holds it
    when the second starts, however fast either is; continued, it ends as if alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
    lock = tmp_path / "out" / "shared" / ".lock"
    deadline = time.time() + 240
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # a stopped process keeps its flock
    folder = tmp_path / "out" / "shared"
    try:
        assert first.poll() is None, first.stderr.read()[-2000:]
        # the second run, in this process: the line run.py prints, then what it removes
        data = f"data_dir={tmp_path / 'data'}"
        err = run_error([data, *args[:-1]], tmp_path / "out", "shared")
        assert not remove_if_only_hydra(folder)
    finally:
        first.send_signal(signal.SIGCONT)
    assert f"pid {first.pid}" in err and "in use" in err, err
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
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


def test_check_results_reruns_with_the_kernel_a_result_records(monkeypatch):
    """The rerun pins impl=auto's CPU choice to the recorded ``kernel``; a result without
    one was made when auto ran the eager path; ``--update`` takes today's default."""
    import importlib.util

    path = ROOT / "scripts" / "check_results.py"
    spec = importlib.util.spec_from_file_location("check_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("SURNN_AUTO_COMPILED", "0")
    saved = RunResult.from_json  # a results.json's content
    old = mod.rerun_env(saved({"threads": 2}))
    assert old["SURNN_AUTO_COMPILED"] == "0" and old["OMP_NUM_THREADS"] == "2"
    assert mod.rerun_env(saved({"kernel": "compiled"}))["SURNN_AUTO_COMPILED"] == "1"
    assert mod.rerun_env(saved({"kernel": "cpu"}))["SURNN_AUTO_COMPILED"] == "0"
    assert "SURNN_AUTO_COMPILED" not in mod.rerun_env(saved({"kernel": None}))  # a baseline
    assert "SURNN_AUTO_COMPILED" not in mod.rerun_env(saved({}), pin_kernel=False)
    cmd = "python run.py experiment=demo_listops hydra.run.dir=/tmp/g8 output_dir=o"
    assert mod.rerun_args(RunResult(command=cmd), Path("/r"), None) == [
        "experiment=demo_listops",
        "output_dir=/r",
        "trainer.progress=false",
    ]  # the rerun's folder, not the recorded hydra.run.dir


def test_check_results_rerun_folders_are_one_hydra_value():
    """A committed result named like the surrogate study's (``surrogate=triangle,width=0.1-s0``)
    is rerun into a folder whose ``output_dir=...`` override Hydra reads as one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from tests.fixtures import load_script

    cr = load_script("check_results")
    folder = cr.rerun_folder(Path("/r"), 3, "surrogate=triangle,width=0.1-s0")
    assert folder == Path("/r/3-surrogate_triangle_width_0.1-s0")
    (o,) = OverridesParser.create().parse_overrides([f"output_dir={folder}"])
    assert o.value() == str(folder)
