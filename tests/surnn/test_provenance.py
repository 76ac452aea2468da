"""surnn.provenance: the commit with its dirty flag (a real git checkout made here), the device
as results and benchmarks record it, the command line as typed."""

from __future__ import annotations

import re
import subprocess
import sys

import torch

from surnn.provenance import command_line, cpu_model, device_name, git_commit


def _git(cwd, *args):
    who = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env = {**who, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_the_commit_carries_a_dirty_flag_for_changed_tracked_files(tmp_path):
    assert git_commit(tmp_path) == "unknown"  # not a checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    sha = _git(tmp_path, "rev-parse", "HEAD").stdout.decode().strip()
    assert git_commit(tmp_path) == sha
    short = git_commit(tmp_path, short=True)
    assert sha.startswith(short) and 7 <= len(short) < len(sha)
    (tmp_path / "new.txt").write_text("untracked files leave the tree clean")
    assert git_commit(tmp_path) == sha
    (tmp_path / "a.txt").write_text("2")
    assert git_commit(tmp_path) == sha + "-dirty"
    assert git_commit(tmp_path, short=True) == short + "-dirty"


def test_the_device_as_runs_and_benchmarks_record_it():
    assert device_name("cpu") == device_name(torch.device("cpu")) == cpu_model() != ""
    with_threads = device_name("cpu", threads=True)
    assert with_threads == f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    # scripts/check_results.py reads a result's thread count from it
    assert int(re.search(r"(\d+) threads", with_threads).group(1)) == torch.get_num_threads()


def test_the_command_line_as_typed(monkeypatch):
    for var in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", ["scripts/bench_surnn.py", "--suite", "targets"])
    assert command_line() == "python scripts/bench_surnn.py --suite targets"


def test_a_script_below_the_working_folder_is_recorded_relative_to_it(monkeypatch, tmp_path):
    """``python /abs/clone/run.py ...`` typed in the clone records ``python run.py ...``, as
    a sweep job's command does; typed elsewhere, the path stays as typed (the working folder
    decides where relative data and output folders land)."""
    from surnn.provenance import ROOT

    for var in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "run.py"), "task=listops", "seed=1"])
    assert command_line() == "python run.py task=listops seed=1"
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / "reproduce.py"), "memory"])
    assert command_line() == "python scripts/reproduce.py memory"
    monkeypatch.chdir(tmp_path)
    assert command_line() == f"python {ROOT / 'scripts' / 'reproduce.py'} memory"


def test_a_module_run_with_dash_m_is_recorded_as_typed(monkeypatch):
    """``python -m pkg.mod ARGS``: sys.argv[0] is the module's file; the command names the
    module, as typed (interpreter options such as -u are not part of it)."""
    from surnn.provenance import ROOT

    for var in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(ROOT)
    module_file = str(ROOT / "surnn" / "ops" / "triton" / "aot_report.py")
    monkeypatch.setattr(sys, "argv", [module_file, "--out", "/tmp/k k"])
    monkeypatch.setattr(
        sys,
        "orig_argv",
        ["/x/bin/python", "-u", "-m", "surnn.ops.triton.aot_report", "--out", "/tmp/k k"],
    )
    assert command_line() == "python -m surnn.ops.triton.aot_report --out '/tmp/k k'"
    # a script run by its path is recorded by its path
    monkeypatch.setattr(sys, "argv", ["scripts/triton_report.py", "--jobs", "2"])
    monkeypatch.setattr(sys, "orig_argv", ["python3", "scripts/triton_report.py", "--jobs", "2"])
    assert command_line() == "python scripts/triton_report.py --jobs 2"


def test_a_main_called_with_its_arguments_records_the_command_that_runs_it_alone(monkeypatch):
    """A script's ``main(argv)`` called in a process started otherwise (a test, another
    script) records ``python <script> <argv>``, not that process's command line."""
    from surnn.provenance import ROOT

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pytest", "-q", "tests"])
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python", "/venv/bin/pytest", "-q", "tests"])
    script = ROOT / "scripts" / "bench_checkpoint.py"
    assert command_line(script, ["outputs/a b", "--batch", "1"]) == (
        "python scripts/bench_checkpoint.py 'outputs/a b' --batch 1"
    )
    assert command_line(script, []) == "python scripts/bench_checkpoint.py"
    assert command_line(script, None) == "python /venv/bin/pytest -q tests"  # not in-process
