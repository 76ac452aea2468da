"""run.py's errors: each is one clear line (exit 2), checked before anything runs.

Each error contract of run.py's command line runs as a real process once (a value
precheck rejects: tests/harness/test_validate.py; a run that fails before it starts:
test_empty_split_file_...); its other cases are checked in this process through the
functions run.py calls (tests.fixtures.precheck_error and run_error), which give the
line run.py prints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surnn.harness.run import HYDRA_FILES
from tests.fixtures import TINY_RUN, in_tmp, precheck_error, run_error, run_in_tmp


def test_unknown_model_is_one_clear_line(tmp):
    err = precheck_error(in_tmp(["model=nope"], tmp))
    assert "unknown model 'nope'" in err and "lstm" in err and "surnn" in err


def test_misspelt_key_is_one_clear_line(tmp):
    err = precheck_error(in_tmp(["trainer.max_stepz=5", "logger=none"], tmp))
    assert "unknown key 'trainer.max_stepz'" in err and "trainer.max_steps?" in err


def test_bad_trainer_value_is_one_clear_line(tmp):
    """A value the schema's type rejects (Hydra's own error, reworded by precheck)."""
    err = precheck_error(
        in_tmp(["trainer.max_steps=abc", "task=listops", "trainer=smoke", *TINY_RUN], tmp)
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


def test_unwritable_output_dir_is_one_line_exit_2_and_nothing_made(tmp_path):
    """/proc takes no new folder, even from root (as a read-only file system). precheck
    refuses it, so run.py exits before Hydra makes a folder anywhere."""
    out = "/proc/surnn-runs"
    args = [f"data_dir={tmp_path / 'data'}", f"output_dir={out}", "task=listops", "model=lstm"]
    err = precheck_error([*args, "trainer=smoke", *TINY_RUN])
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
    args = ["task=listops", "model=lstm", "trainer=smoke", "run_id=bad", *TINY_RUN, *bad]
    err = precheck_error(in_tmp(args, tmp_path))
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
    p = run_in_tmp(
        ["task=listops", "trainer=smoke", "model=lstm", "logger=none", "run_id=empty"], tmp_path
    )
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith("error:") and "basic_val.tsv" in err[-1] and "no rows" in err[-1]
    assert not (tmp_path / "out" / "empty").exists()
