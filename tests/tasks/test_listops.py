"""ListOps task: release-format loading, vocabulary, cache, corrupt rows, source choice."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

import tasks.listops as lo
from surnn.errors import ConfigError, DataError
from surnn.harness.registry import TASKS
from tasks.generators import listops as gen
from tasks.listops import EOS_ID, ListOps

ROWS = {
    "train": [
        ("( ( ( [MAX 2 ) 9 ) ] )", 9),
        ("( ( ( ( [SM 7 ) 8 ) 9 ) ] )", 4),
        ("( ( ( [MIN ( ( ( [MED 1 ) 4 ) ] ) ) 3 ) ] )", 2),
        ("( ( ( [MIN 0 ) 5 ) ] )", 0),
    ],
    "val": [("( ( ( [MED 1 ) 4 ) ] )", 2)],
    "test": [("( ( ( [MAX 3 ) 1 ) ] )", 3), ("( ( ( [SM 5 ) 6 ) ] )", 1)],
}


def write_release(root, rows=ROWS, header="Source\tTarget"):
    folder = root / "listops-1000"
    folder.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        lines = [header] + [f"{s}\t{y}" for s, y in items]
        (folder / f"basic_{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_registered():
    assert TASKS.get("listops") is ListOps


def test_loads_release_format(tmp_path):
    write_release(tmp_path)
    task = ListOps(tmp_path)
    sp = task.splits()
    assert (len(sp.train), len(sp.val), len(sp.test)) == (4, 1, 2)
    x, y = sp.train[0]
    # [MAX 2 9 ] EOS -> ids 2, 6+2, 6+9, 5, 16
    assert x.tolist() == [2, 8, 15, 5, EOS_ID] and y == 9
    x, y = sp.train[2]
    assert x.tolist() == [1, 3, 7, 10, 5, 9, 5, EOS_ID] and y == 2
    assert task.vocab_size == 17 and task.n_classes == 10
    d = task.describe()
    assert d["source"] == "lra_release" and d["append_eos"] is True
    assert d["vocab"]["]"] == 5 and d["vocab"]["<eos>"] == EOS_ID
    assert d["stats"]["train"]["class_counts"][9] == 1


def test_without_eos(tmp_path):
    write_release(tmp_path)
    sp = ListOps(tmp_path, append_eos=False).splits()
    assert sp.val[0][0].tolist() == [3, 7, 10, 5]


def test_collate_batch(tmp_path):
    write_release(tmp_path)
    sp = ListOps(tmp_path).splits()
    b = sp.collate([sp.train[i] for i in range(4)])
    assert b["x"].dtype == torch.long and b["x"].shape == (4, 8)
    assert b["lengths"].tolist() == [5, 6, 8, 5]
    assert b["y"].tolist() == [9, 4, 2, 0]
    assert b["x"][0, 5:].eq(0).all() and b["x"][2, 7] == EOS_ID


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    folder = write_release(tmp_path)
    ListOps(tmp_path).splits()
    calls = []
    real = lo.read_tsv
    monkeypatch.setattr(lo, "read_tsv", lambda *a: calls.append(a) or real(*a))
    sp = ListOps(tmp_path).splits()
    assert calls == [] and isinstance(sp.train.data, np.memmap) and sp.train.data.dtype == np.int8
    ListOps(tmp_path, max_len=6).splits()  # another option -> another cache
    assert len(calls) == 3
    f = folder / "basic_val.tsv"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # file changed -> rebuilt
    ListOps(tmp_path).splits()
    assert len(calls) == 6


def test_truncation_is_logged(tmp_path, caplog):
    write_release(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tasks.listops"):
        sp = ListOps(tmp_path, max_len=6).splits()
    assert "1 of 4 sequences longer than max_len=6" in caplog.text
    x, _ = sp.train[2]
    assert len(x) == 6 and x[-1] == EOS_ID and x[:5].tolist() == [1, 3, 7, 10, 5]
    assert ListOps(tmp_path, max_len=6).describe()["max_len"] == 6


BAD = [
    ("( ( ( [MAX 2 ) 9 ) ] )", "2 tab-separated columns"),  # no Target column
    ("( ( ( [MAX 2 ) 9 ) ] )\t9\textra", "2 tab-separated columns"),
    ("( ( ( [MAX 2 ) 9 ) ] )\t12", "not an integer 0-9"),
    ("( ( ( [MAX 2 ) 9 ) ] )\tnine", "not an integer 0-9"),
    ("( ( ( [MAX 2 ) 9 ) ] )\t9.0", "not an integer 0-9"),
    ("( ( ( [MAX 2 ) 12 ) ] )\t9", "'12' is not one of"),
    ("( ( ( [MAX 2 ) x ) ] )\t9", "'x' is not one of"),
    ("( ( ( [MAXX 2 ) 9 ) ] )\t9", "'[MAXX' is not one of"),
    ("( ( ( [MAX\x01 2 ) 9 ) ] )\t9", "is not one of"),
    ("( ( ( [MAX \x01 ) 9 ) ] )\t9", "is not one of"),
    ("( ( ) )\t3", "no tokens"),
    ("\t3", "no tokens"),
]


@pytest.mark.parametrize("row,message", BAD)
def test_corrupt_row_raises_one_line_data_error(tmp_path, row, message):
    rows = dict(ROWS)
    rows["val"] = [("( ( ( [MED 1 ) 4 ) ] )", 2), (row, "")]
    folder = write_release(tmp_path, rows)
    # the writer adds "\t" + label; rows above carry their own label column
    text = (folder / "basic_val.tsv").read_text().replace(row + "\t\n", row + "\n")
    (folder / "basic_val.tsv").write_text(text)
    with pytest.raises(DataError) as e:
        ListOps(tmp_path).splits()
    msg = str(e.value)
    assert f"{folder / 'basic_val.tsv'}:3:" in msg and message in msg
    assert "\n" not in msg and "fix" in msg


def test_missing_header(tmp_path):
    folder = write_release(tmp_path, header="( ( ( [MAX 2 ) 9 ) ] )\t9")
    with pytest.raises(DataError, match=rf"{folder / 'basic_train.tsv'}:1: expected the header"):
        ListOps(tmp_path).splits()


def test_partial_release_and_release_only(tmp_path):
    with pytest.raises(DataError, match="generate is null"):
        ListOps(tmp_path, generate=None).splits()
    folder = write_release(tmp_path)
    (folder / "basic_test.tsv").unlink()
    with pytest.raises(DataError, match="basic_test.tsv missing"):
        ListOps(tmp_path).splits()


def test_bad_options():
    with pytest.raises(ConfigError, match="unknown option"):
        ListOps("x", max_length=3)
    with pytest.raises(ConfigError, match="unknown generate option"):
        ListOps("x", generate={"depth": 3})
    with pytest.raises(ConfigError, match="max_len"):
        ListOps("x", max_len=0)
    with pytest.raises(ConfigError, match="no tree can satisfy"):
        ListOps("x", generate={"min_length": 10, "max_length": 11})


DEMO = {
    "seed": 0,
    "n_train": 200,
    "n_val": 20,
    "n_test": 20,
    "min_length": 20,
    "max_length": 150,
    "max_depth": 10,
    "workers": 1,
}


def test_non_default_settings_generate_beside_real_data(tmp_path):
    write_release(tmp_path)  # a (tiny) real release must neither be used nor touched
    before = (tmp_path / "listops-1000" / "basic_train.tsv").read_text()
    task = ListOps(tmp_path, generate=DEMO)
    sp = task.splits()
    assert len(sp.train) == 200 and task.describe()["source"] == "generated"
    (gen_dir,) = tmp_path.glob("listops-gen-*/listops-1000")
    assert (gen_dir / gen.MARKER).exists()
    assert (tmp_path / "listops-1000" / "basic_train.tsv").read_text() == before
    assert not (tmp_path / "listops-1000" / gen.MARKER).exists()
    for x, y in (sp.test[i] for i in range(len(sp.test))):
        assert 21 <= len(x) <= 150 and x[-1] == EOS_ID and 0 <= y <= 9


def test_default_settings_generate_into_release_folder(tmp_path, monkeypatch):
    real = gen.generate
    small = gen.ListOpsSpec(n_train=30, n_val=5, n_test=5)
    monkeypatch.setattr(gen, "generate", lambda spec, **kw: real(small, **kw))
    task = ListOps(tmp_path, generate={"seed": 0})  # every other setting at LRA's default
    sp = task.splits()
    assert len(sp.train) == 30 and task.describe()["source"] == "generated"
    assert (tmp_path / "listops-1000" / gen.MARKER).exists()
    assert not list(tmp_path.glob("listops-gen-*"))
    x, y = sp.train[0]
    assert 501 <= len(x) - 1 <= 1999


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Source\tTarget\n( [MAX 2 ] )\t2\n".encode("utf-16"), "UTF-16"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n".encode("utf-16-le"), "UTF-16"),
        (b"Source\tTarget\n( [MAX 2 \xe9 ] )\t2\n", "not UTF-8 text"),
        (b"Source\tTarget\n", "no rows"),
    ],
)
def test_tsv_in_another_encoding_says_so(tmp_path, raw, want):
    from surnn.errors import DataError
    from tasks.listops import read_tsv

    f = tmp_path / "basic_train.tsv"
    f.write_bytes(raw)
    with pytest.raises(DataError) as e:
        read_tsv(f, 100, True)
    assert want in str(e.value) and "add that header" not in str(e.value), str(e.value)


def test_tsv_with_a_utf8_byte_order_mark_reads(tmp_path):
    from tasks.listops import read_tsv

    f = tmp_path / "basic_train.tsv"
    f.write_bytes(b"\xef\xbb\xbfSource\tTarget\n[MAX 2 9 ]\t9\n")
    seqs, labels, _ = read_tsv(f, 100, True)
    assert labels.tolist() == [9]
