"""tasks.cache: the one cache protocol of every task -- build once, read without a lock or a
write (so a read-only data folder serves runs), and stop with one line on a cache that is
missing there, garbled, truncated or overwritten at the same size. Also tasks.npy, the
streamed .npy writer."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tasks.cache as cache
from surnn.errors import DataError
from tasks.base import Task
from tasks.cache import load_or_build
from tasks.formats import random_images, write_pathfinder_pngs
from tasks.npy import NpyStream
from tests.fixtures import TINY_LISTOPS, load_script, train_here, tree_state, write_raw

ROOT = Path(__file__).resolve().parents[2]
KEY = {"format": 1, "option": "a"}
NAMES = ("tokens", "idx")


class Toy(Task):
    name = "toy"


def builder(calls: list):
    """A build that streams one array into the folder and returns another."""

    def build(tmp: Path):
        calls.append(tmp)
        s = NpyStream(tmp / "tokens.npy", np.int16)
        s.write(np.arange(300))
        s.close()
        return {"idx": np.arange(10)}, {"note": "toy"}

    return build


def built(data_dir: Path) -> cache.Cache:
    return load_or_build(Toy(data_dir), "toy", KEY, NAMES, builder([]))


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- npy


@pytest.mark.parametrize("dtype, n", [(np.uint8, 0), (np.uint8, 1001), (np.int16, 7)])
def test_npy_stream_writes_what_numpy_writes(tmp_path, dtype, n):
    data = (np.arange(n) % 200).astype(dtype)
    s = NpyStream(tmp_path / "s.npy", dtype)
    for part in np.array_split(data, 3):
        s.write(part)
    s.close()
    np.save(tmp_path / "ref.npy", data)
    assert (tmp_path / "s.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()


# ----------------------------------------------------------------------------- protocol


def test_builds_once_then_memory_maps_without_building(tmp_path):
    calls = []
    a = load_or_build(Toy(tmp_path), "toy", KEY, NAMES, builder(calls))
    b = load_or_build(Toy(tmp_path), "toy", KEY, NAMES, builder(calls))
    assert len(calls) == 1 and a.path == b.path == cache.cache_dir(tmp_path, "toy", KEY)
    assert isinstance(b.arrays["tokens"], np.memmap) and b.arrays["tokens"][299] == 299
    assert b.meta == {"note": "toy"} and b.arrays["idx"].tolist() == list(range(10))
    assert [p.name for p in (tmp_path / "cache" / "toy").iterdir()] == [a.path.name]
    record = json.loads((a.path / "meta.json").read_text())
    assert record["protocol"] == cache.PROTOCOL and cache.cache_key(record["key"]) == a.path.name
    assert record["arrays"]["tokens"]["shape"] == [300] and record["arrays"]["idx"]["bytes"] == 208
    other = load_or_build(Toy(tmp_path), "toy", {**KEY, "option": "b"}, NAMES, builder(calls))
    assert len(calls) == 2 and other.path != a.path


def test_a_cache_of_the_earlier_layout_is_rebuilt_not_misread(tmp_path):
    """Before the protocol, meta.json held the task's metadata alone."""
    path = cache.cache_dir(tmp_path, "toy", KEY)
    path.mkdir(parents=True)
    np.save(path / "tokens.npy", np.zeros(3, np.int16))
    np.save(path / "idx.npy", np.zeros(1, np.int64))
    (path / "meta.json").write_text(json.dumps({"note": "earlier"}))
    calls = []
    c = load_or_build(Toy(tmp_path), "toy", KEY, NAMES, builder(calls))
    assert len(calls) == 1 and c.meta == {"note": "toy"} and len(c.arrays["tokens"]) == 300


def test_a_failed_build_leaves_no_folder(tmp_path):
    def build(tmp):
        (tmp / "part.npy").write_bytes(b"half")
        raise DataError("bad row")

    with pytest.raises(DataError, match="bad row"):
        load_or_build(Toy(tmp_path), "toy", KEY, NAMES, build)
    assert list((tmp_path / "cache" / "toy").iterdir()) == []


def test_a_process_waiting_on_the_builder_reads_what_it_built(tmp_path):
    """Concurrent runs and DDP ranks build a cache once: a second process that finds it
    missing waits for the lock and then reads the first one's cache. Whenever the second
    process gets to the lock, it must not build (its builder would leave a marker)."""
    path = cache.cache_dir(tmp_path, "toy", KEY)
    code = (
        "from pathlib import Path\n"
        "from tasks.cache import load_or_build\n"
        "from tests.tasks.test_cache import KEY, NAMES, Toy\n"
        "def build(tmp):\n"
        f"    Path({str(tmp_path / 'rebuilt')!r}).touch()\n"
        "    raise SystemExit(3)\n"
        f"c = load_or_build(Toy({str(tmp_path)!r}), 'toy', KEY, NAMES, build)\n"
        "print(c.meta['note'], int(c.arrays['tokens'][7]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with cache.file_lock(tmp_path / "cache" / ".locks" / f"toy-{path.name}.lock"):
        waiting = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
        )
        cache._build(path, KEY, NAMES, builder([]))
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and out.split() == ["toy", "7"]
    assert not (tmp_path / "rebuilt").exists()


def _overwrite_tail(f: Path) -> None:
    """Same size, other bytes: the last 8 bytes of the array's data."""
    raw = bytearray(f.read_bytes())
    raw[-8:] = b"\xff" * 8
    f.write_bytes(bytes(raw))


DAMAGE = {
    "garbled meta.json": (
        lambda p: (p / "meta.json").write_text('{"protocol": 2, "ke'),
        "meta.json is not valid JSON",
    ),
    "index overwritten at the same size": (
        lambda p: _overwrite_tail(p / "idx.npy"),
        "the bytes of idx.npy differ from those written",
    ),
    "truncated": (
        lambda p: (p / "tokens.npy").write_bytes((p / "tokens.npy").read_bytes()[:-9]),
        "tokens.npy has 719 bytes, 728 were written",
    ),
    "array deleted": (lambda p: (p / "idx.npy").unlink(), "idx.npy is missing"),
    "another cache's meta.json": (
        lambda p: (p / "meta.json").write_text(
            (p / "meta.json").read_text().replace('"option": "a"', '"option": "c"')
        ),
        "meta.json records the key of the cache",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_is_one_line_before_any_use(tmp_path, damage):
    path = built(tmp_path).path
    hurt, says = DAMAGE[damage]
    hurt(path)
    with pytest.raises(DataError) as e:
        built(tmp_path)
    msg = one_line(e)
    assert f"task=toy: the cache {path} is corrupt: {says}" in msg
    assert msg.endswith("delete that folder and rerun to rebuild it")


def test_large_arrays_are_checked_by_sampled_blocks(tmp_path, monkeypatch):
    """Above WHOLE_FILE bytes the digest reads SAMPLES blocks: a file rewritten with other
    contents is caught without reading it whole."""
    monkeypatch.setattr(cache, "WHOLE_FILE", 256)
    monkeypatch.setattr(cache, "BLOCK", 16)
    monkeypatch.setattr(cache, "SAMPLES", 4)
    f = built(tmp_path).path / "tokens.npy"
    raw = f.read_bytes()
    f.write_bytes(raw[:128] + raw[128:][::-1])  # the same header and size, other data
    with pytest.raises(DataError, match="the bytes of tokens.npy differ from those written"):
        built(tmp_path)
    f.write_bytes(raw)
    assert built(tmp_path).arrays["tokens"][-1] == 299


# ----------------------------------------------------------------------------- read-only


def test_a_complete_cache_in_a_read_only_folder_is_read_and_left_untouched(tmp_path, frozen):
    built(tmp_path)
    frozen(tmp_path)
    before = tree_state(tmp_path)
    calls = []
    c = load_or_build(Toy(tmp_path), "toy", KEY, NAMES, builder(calls))
    assert calls == [] and c.arrays["tokens"][5] == 5
    assert tree_state(tmp_path) == before


def test_a_missing_cache_in_a_read_only_folder_names_it_and_the_command(tmp_path, frozen):
    frozen(tmp_path)
    with pytest.raises(DataError) as e:
        built(tmp_path)
    msg = one_line(e)
    path = cache.cache_dir(tmp_path, "toy", KEY)
    assert f"task=toy: the cache {path} is not built, and {tmp_path} is not writable" in msg
    assert f"python scripts/prepare_data.py --data-dir {tmp_path} --build-cache --tasks toy" in msg


def test_an_out_of_date_or_damaged_cache_in_a_read_only_folder_says_where_to_rebuild(
    tmp_path, frozen
):
    path = built(tmp_path).path
    other = built(tmp_path / "b").path
    (other / "meta.json").write_text(json.dumps({"note": "earlier"}))
    _overwrite_tail(path / "idx.npy")
    frozen(tmp_path)
    with pytest.raises(DataError) as e:
        built(tmp_path / "b")
    assert "is out of date (written under cache protocol 1), and" in one_line(e)
    with pytest.raises(DataError) as e:
        built(tmp_path)
    msg = one_line(e)
    assert "corrupt: the bytes of idx.npy differ" in msg and "delete" not in msg
    assert "rebuild it where it can be written: python scripts/prepare_data.py" in msg


def test_a_refused_write_is_one_line_even_where_access_says_writable(tmp_path, frozen, monkeypatch):
    """A file system may refuse what os.access allows (NFS, a root-squashed share)."""
    frozen(tmp_path)
    monkeypatch.setattr(cache, "unwritable", lambda folder: None)
    with pytest.raises(DataError) as e:
        built(tmp_path)
    msg = one_line(e)
    assert "is not built, and writing" in msg and "failed (Read-only file system)" in msg


def _tiny_listops(d: Path):
    from tasks.listops import ListOps

    overrides = dict(o.split("=") for o in TINY_LISTOPS)
    gen = {k.rsplit(".", 1)[1]: int(v) for k, v in overrides.items() if ".generate." in k}
    return ListOps(d, max_len=64, generate={**gen, "workers": 1})


def _pathfinder(d: Path):
    from tasks.pathfinder import Pathfinder

    if not (d / "pathfinder32").exists():
        imgs, y = random_images(20, 32)
        write_pathfinder_pngs(d, "pathfinder32/curv_contour_length_14", imgs, y)
    return Pathfinder(d, workers=1)


def _make(name: str, d: Path) -> Task:
    from tasks.image import Image
    from tasks.pixel import SMNIST
    from tasks.retrieval import Retrieval
    from tasks.text import Text
    from tasks.wikitext import WikiText2

    if name == "listops":
        return _tiny_listops(d)
    if name == "pathfinder":
        return _pathfinder(d)
    if not any(d.iterdir()):
        write_raw(d, name)
    return {
        "text": lambda: Text(d, hub=False),
        "retrieval": lambda: Retrieval(d, max_len=64),
        "image": lambda: Image(d, val_size=4, hub=False),
        "smnist": lambda: SMNIST(d, val_size=4, hub=False),
        "wikitext2": lambda: WikiText2(d, hub=False),
    }[name]()


TASK_NAMES = ["listops", "text", "retrieval", "image", "smnist", "pathfinder", "wikitext2"]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_reads_its_cache_from_a_read_only_folder(tmp_path, frozen, name):
    first = _make(name, tmp_path).splits()
    frozen(tmp_path)
    before = tree_state(tmp_path)
    again = _make(name, tmp_path)
    s = again.splits()
    assert tree_state(tmp_path) == before
    for a, b in ((first.train, s.train), (first.test, s.test)):
        assert len(a) == len(b)
    if name == "wikitext2":
        assert np.array_equal(first.test.tokens, s.test.tokens)
    else:
        x, y = first.test[1][:-1], first.test[1][-1]
        assert all(np.array_equal(u, v) for u, v in zip(x, s.test[1][:-1])) and y == s.test[1][-1]
    assert again.describe()["name"] == name


def test_generating_into_a_read_only_folder_is_one_line_naming_what_is_missing(tmp_path, frozen):
    (tmp_path / "data").mkdir()
    frozen(tmp_path)
    with pytest.raises(DataError) as e:
        _tiny_listops(tmp_path / "data").splits()
    msg = one_line(e)
    assert "lacks basic_train.tsv, basic_val.tsv, basic_test.tsv, and" in msg
    assert "is not writable; generate them where they can be written: python scripts/" in msg
    from tasks.pathfinder import Pathfinder

    with pytest.raises(DataError) as e:
        Pathfinder(tmp_path / "data", generate={"n": 20, "workers": 1}).splits()
    msg = one_line(e)
    assert "no data at" in msg and "python -m tasks.generators.pathfinder --resolution 32" in msg


def test_the_command_the_error_names_prepares_a_folder_that_serves_read_only(
    tmp_path, frozen, monkeypatch, capsys
):
    """A shared folder prepared by prepare_data --build-cache, with the run's overrides,
    holds the cache that run reads: the command of the read-only error is the fix."""
    data = tmp_path / "data"
    data.mkdir()
    frozen(data)
    with pytest.raises(DataError) as e:
        _tiny_listops(data).splits()
    command = one_line(e).split("python scripts/prepare_data.py ")[1].split(",")[0].split()
    assert command == ["--data-dir", str(data), "--build-cache", "--tasks", "listops"]
    monkeypatch.undo()  # writable again for the one who prepares it
    for p in [data, *data.rglob("*")]:
        os.chmod(p, p.stat().st_mode | stat.S_IWUSR)
    assert load_script("prepare_data").main([*command, *TINY_LISTOPS]) == 0
    assert "listops  generated" in capsys.readouterr().out
    frozen(data)
    before = tree_state(data)
    s = _tiny_listops(data).splits()
    assert (len(s.train), len(s.val), len(s.test)) == (64, 20, 21)
    assert tree_state(data) == before


def test_a_run_trains_on_a_read_only_data_folder(tmp_path, frozen, caplog):
    """A complete, cached data folder, read-only as a cluster's shared data set: a run (as
    run.py trains it, in this process, where every write under the folder fails as on a
    read-only mount) reads its cache and leaves it byte for byte as it was."""
    import logging

    data = tmp_path / "data"
    _tiny_listops(data).splits()
    before = tree_state(data)
    args = ["task=listops", "model=lstm", "trainer=smoke", "trainer.max_steps=2", "logger=none"]
    frozen(data)
    with caplog.at_level(logging.INFO):
        res = train_here([*args, *TINY_LISTOPS, f"data_dir={data}"], tmp_path / "out", "ro")
    assert "listops: cache hit" in caplog.text, caplog.text[-3000:]
    assert res.steps == 2 and (tmp_path / "out" / "ro" / "results.json").exists()
    assert tree_state(data) == before
