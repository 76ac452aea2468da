"""tasks/formats.py: the writers produce the release formats they claim."""

from __future__ import annotations

import pickle

from tasks.formats import write_aan, write_aclimdb, write_cifar


def test_fixture_writers_match_release_formats(tmp_path):
    acl = write_aclimdb(tmp_path, n=2)
    assert len(list((tmp_path / "aclImdb/train/pos").glob("*.txt"))) == 2
    assert len(acl["test"]) == 4
    write_aan(tmp_path, {"train": 2, "eval": 1, "test": 1})
    row = (tmp_path / "tsv_data/new_aan_pairs.train.tsv").read_text().splitlines()[0].split("\t")
    assert len(row) == 5 and row[0] in ("0.0", "1.0")
    rgb, y = write_cifar(tmp_path, n=3)
    with open(tmp_path / "cifar-10-batches-py/data_batch_2", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert d[b"data"].shape == (3, 3072) and d[b"labels"] == y[3:6].tolist()
    assert d[b"data"][0, 1024] == rgb[3, 0, 0, 1]  # G plane starts at 1024
