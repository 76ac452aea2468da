"""One live process per run folder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import socket

import pytest

from surnn.errors import ConfigError
from surnn.harness.lock import LOCK_NAME, RunLock
from surnn.harness.loggers import WandbLog
from surnn.provenance import command_line


def test_second_holder_is_refused_naming_the_first(tmp_path):
    a = RunLock(tmp_path / "run").acquire()
    with pytest.raises(ConfigError) as e:
        RunLock(tmp_path / "run").acquire()
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "\n" not in msg
    a.release()
    b = RunLock(tmp_path / "run").acquire()  # free again
    assert b.previous is None  # a released lock names no holder: none to "take over"
    b.release()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 7, "host": "gone", "started": "x"}))
    lock = RunLock(run).acquire()  # nobody holds the flock: the holder died
    assert lock.previous["pid"] == 2**22 + 7
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release(remove=True)
    assert not (run / LOCK_NAME).exists()


def test_command_line_under_torchrun_names_the_launcher(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr("sys.argv", ["run.py", "task=listops"])
    cmd = command_line()  # the parent here is not torchrun: rebuilt from the environment
    assert cmd.startswith("torchrun --nproc_per_node=2 run.py task=listops"), cmd


def test_offline_wandb_run_says_how_to_upload_it(tmp_path, caplog):
    class FakeRun:
        class settings:  # noqa: N801
            sync_dir = str(tmp_path / "wandb" / "offline-run-1")

        def finish(self):
            pass

    w = WandbLog.__new__(WandbLog)
    w.mode, w.run_dir, w.run = "offline", tmp_path, FakeRun()
    with caplog.at_level("INFO", logger="surnn.harness.loggers"):
        w.close()
    assert f"wandb sync {tmp_path / 'wandb' / 'offline-run-1'}" in caplog.text
