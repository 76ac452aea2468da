"""Text (IMDB bytes) and Retrieval (AAN TSV, dual) loaders on release-format fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest

from surnn.errors import ConfigError, DataError
from tasks.formats import write_aan, write_aclimdb, write_hub
from tasks.retrieval import Retrieval
from tasks.text import Text, _acl_files


def ids(b: bytes, n: int) -> np.ndarray:
    return np.frombuffer(b[:n], np.uint8).astype(np.int64) + 1


def test_text_bytes_labels_and_lra_splits(tmp_path):
    ref = write_aclimdb(tmp_path, n=3)
    t = Text(tmp_path, max_len=64, hub=False)
    s = t.splits()
    assert (len(s.train), len(s.val), len(s.test)) == (6, 6, 6)
    for k, (b, y) in enumerate(ref["train"]):
        x, label = s.train[k]
        assert label == y
        np.testing.assert_array_equal(x, ids(b, 64))
    # LRA: the test reviews double as validation
    np.testing.assert_array_equal(s.val[3][0], s.test[3][0])
    np.testing.assert_array_equal(s.test[0][0], ids(ref["test"][0][0], 64))
    batch = s.collate([s.train[i] for i in range(4)])
    lengths = [min(len(ref["train"][i][0]), 64) for i in range(4)]
    assert batch["lengths"].tolist() == lengths
    assert batch["x"].shape == (4, max(lengths)) and batch["x"].max() <= 256
    assert batch["x"][0, lengths[0] :].eq(0).all() and batch["y"].tolist() == [0, 0, 0, 1]
    d = t.describe()
    assert d["vocab_size"] == 257 and d["max_len"] == 64 and "aclImdb" in d["source"]
    assert d["truncated"] == 4  # the review with the long tail, in each split and class


def test_text_val_fraction_is_seeded_and_cache_keyed(tmp_path):
    write_aclimdb(tmp_path, n=5)
    a = Text(tmp_path, val_fraction=0.2, split_seed=1, hub=False)
    sa = a.splits()
    assert (len(sa.train), len(sa.val), len(sa.test)) == (8, 2, 10)
    b = Text(tmp_path, val_fraction=0.2, split_seed=1, hub=False)
    sb = b.splits()
    assert b.cache_path == a.cache_path
    np.testing.assert_array_equal(sa.val.indices, sb.val.indices)
    c = Text(tmp_path, val_fraction=0.2, split_seed=2, hub=False)
    c.splits()
    assert c.cache_path != a.cache_path
    d = Text(tmp_path, max_len=100, hub=False)
    d.splits()
    assert d.cache_path != a.cache_path
    assert len(list((tmp_path / "cache" / "text").iterdir())) == 3


def test_text_cache_is_reused(tmp_path, monkeypatch):
    write_aclimdb(tmp_path, n=2)
    Text(tmp_path, hub=False).splits()

    def boom(*a, **k):
        raise AssertionError("rebuilt a cache that exists")

    monkeypatch.setattr(Text, "_build", boom)
    s = Text(tmp_path, hub=False).splits()
    assert len(s.train) == 4


def test_text_missing_data_names_both_sources(tmp_path):
    with pytest.raises(DataError, match=r"aclImdb.*hub/stanfordnlp/imdb"):
        Text(tmp_path, hub=False).splits()
    with pytest.raises(ConfigError, match="max_len"):
        Text(tmp_path, max_len=0)
    with pytest.raises(ConfigError, match="unknown options"):
        Text(tmp_path, seq_len=5)


def test_text_reads_a_datasets_save_to_disk_folder(tmp_path):
    pytest.importorskip("datasets")
    ref = write_aclimdb(tmp_path / "acl", n=2)
    cols = {
        s: {"text": [b.decode() for b, _ in ref[s]], "label": [y for _, y in ref[s]]}
        for s in ("train", "test")
    }
    write_hub(tmp_path, "stanfordnlp/imdb", cols)
    t = Text(tmp_path, max_len=32, hub=False)
    s = t.splits()
    assert "save_to_disk" in t.describe()["source"]
    assert len(s.train) == 4 and s.train[2][1] == 1
    np.testing.assert_array_equal(s.train[1][0], ids(ref["train"][1][0], 32))


def test_retrieval_streams_tsv_with_float_labels(tmp_path):
    ref = write_aan(tmp_path, {"train": 5, "eval": 3, "test": 2})
    t = Retrieval(tmp_path, max_len=40)
    s = t.splits()
    assert t.dual and t.vocab_size == 257
    assert (len(s.train), len(s.val), len(s.test)) == (5, 3, 2)
    for k, (y, t1, t2) in enumerate(ref["eval"]):
        x1, x2, label = s.val[k]
        assert label == y
        np.testing.assert_array_equal(x1, ids(t1, 40))
        np.testing.assert_array_equal(x2, ids(t2, 40))
    batch = s.collate([s.train[i] for i in range(3)])
    assert set(batch) == {"x", "lengths", "x2", "lengths2", "y"}
    assert batch["lengths2"][0] == 40  # document with the long text is cut to max_len
    assert batch["x"].shape[0] == batch["x2"].shape[0] == 3
    assert batch["y"].tolist() == [r[0] for r in ref["train"][:3]]
    assert t.describe()["counts"] == {"train": 5, "val": 3, "test": 2}


def test_retrieval_doc_bytes_cut_before_max_len(tmp_path):
    write_aan(tmp_path, {"train": 2, "eval": 1, "test": 1})
    s = Retrieval(tmp_path, max_len=4000, doc_bytes=10).splits()
    assert all(len(s.train[i][0]) <= 10 and len(s.train[i][1]) <= 10 for i in range(2))


@pytest.mark.parametrize(
    "row, match",
    [
        ("1.0\ta\tb\tonly four", r"new_aan_pairs.train.tsv:2: expected 5 tab-separated"),
        ("2.0\ta\tb\tt1\tt2", r"new_aan_pairs.train.tsv:2: label '2.0' is not 0 or 1"),
        ("yes\ta\tb\tt1\tt2", r"new_aan_pairs.train.tsv:2: label 'yes'"),
    ],
)
def test_retrieval_bad_rows_name_file_and_line(tmp_path, row, match):
    write_aan(tmp_path, {"train": 2, "eval": 1, "test": 1})
    p = tmp_path / "tsv_data" / "new_aan_pairs.train.tsv"
    lines = p.read_text().splitlines()
    lines[1] = row
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match):
        Retrieval(tmp_path).splits()
    assert not list((tmp_path / "cache" / "retrieval").glob("*/meta.json"))  # nothing half-built


def test_retrieval_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"new_aan_pairs.train.tsv.*lra_release"):
        Retrieval(tmp_path).splits()


def test_text_cache_key_sees_an_edit_to_any_review(tmp_path):
    """Not only the first and last files: a changed review in the middle rebuilds."""
    write_aclimdb(tmp_path, n=4)
    a = Text(tmp_path, hub=False)
    a.splits()
    middle = sorted((tmp_path / "aclImdb" / "train" / "pos").glob("*.txt"))[1]
    st = middle.stat()
    middle.write_bytes(middle.read_bytes()[::-1])  # same size, new content and mtime
    os.utime(middle, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    b = Text(tmp_path, hub=False)
    s = b.splits()
    assert b.cache_path != a.cache_path
    k = [p for p, _ in _acl_files(tmp_path / "aclImdb", "train")].index(middle)
    n = min(b.max_len, st.st_size)
    np.testing.assert_array_equal(s.train[k][0], ids(middle.read_bytes(), n))


def test_unreachable_hub_fails_fast_and_offline_mode_uses_the_cache(tmp_path, monkeypatch):
    """Offline, load_dataset spent ~30 s in retries before the missing-data error; the
    probe answers at once. In offline mode (HF_HUB_OFFLINE=1) the hub's local cache is
    read without probing."""
    import socket
    import time

    datasets = pytest.importorskip("datasets")
    import tasks.hub as hub

    loads = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name: loads.append(name) or "cached")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)

    def refuse(addr, timeout=None):
        assert addr == ("hub.invalid", 8080) and timeout == hub.PROBE_TIMEOUT_S
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid:8080")
    t0 = time.monotonic()
    with pytest.raises(
        DataError, match=r"hub: hub.invalid:8080 unreachable.*not tried.*HF_HUB_OFFLINE=1"
    ):
        Text(tmp_path, hub=True).splits()
    assert time.monotonic() - t0 < 5 and loads == []

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cache only: no probe, load_dataset called
    assert hub.load_hub(tmp_path, "stanfordnlp/imdb", True) == ("cached", "hub stanfordnlp/imdb")
    assert loads == ["stanfordnlp/imdb"]
