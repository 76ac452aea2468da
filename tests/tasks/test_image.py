"""Image (greyscale CIFAR-10) loader on cifar-10-batches-py fixtures."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from surnn.errors import ConfigError, DataError
from tasks.formats import write_cifar
from tasks.image import Image


def grey(rgb: np.ndarray) -> np.ndarray:
    g = 0.2989 * rgb[..., 0] + 0.5870 * rgb[..., 1] + 0.1140 * rgb[..., 2]
    return np.clip(np.rint(g), 0, 255).astype(np.uint8).reshape(len(rgb), -1)


def test_image_greyscale_tokens_and_splits(tmp_path):
    rgb, y = write_cifar(tmp_path, n=20)
    t = Image(tmp_path, val_size=10, hub=False)
    s = t.splits()
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    assert t.vocab_size == 257 and t.max_len == 1024 and t.n_classes == 10
    ref = grey(rgb)
    for k in (0, 7):  # test rows are the test_batch in order
        x, label = s.test[k]
        np.testing.assert_array_equal(x, ref[100 + k].astype(np.int64) + 1)
        assert label == y[100 + k]
    # train and val partition the 100 train images
    both = np.concatenate([s.train.indices, s.val.indices])
    assert sorted(both.tolist()) == list(range(100))
    i = int(s.val.indices[0])
    np.testing.assert_array_equal(s.val[0][0], ref[i].astype(np.int64) + 1)
    b = s.collate([s.train[j] for j in range(3)])
    assert b["x"].shape == (3, 1024) and b["x"].min() >= 1 and b["lengths"].eq(1024).all()


def test_image_values_are_normalised_with_train_stats(tmp_path):
    rgb, _ = write_cifar(tmp_path, n=10)
    t = Image(tmp_path, input="values", val_size=5, hub=False)
    s = t.splits()
    assert t.input_kind == "values" and t.input_dim == 1
    b = s.collate([s.train[j] for j in range(len(s.train))])
    assert b["x"].shape == (45, 1024, 1) and b["x"].dtype == torch.float32
    assert abs(float(b["x"].mean())) < 1e-3 and abs(float(b["x"].std()) - 1) < 1e-2
    assert "values" in t.describe()["encoding"]


def test_image_split_is_seeded_and_cache_shared_by_encodings(tmp_path):
    write_cifar(tmp_path, n=10)
    a, b = Image(tmp_path, hub=False, val_size=5), Image(tmp_path, hub=False, val_size=5)
    sa, sb = a.splits(), b.splits()
    np.testing.assert_array_equal(sa.val.indices, sb.val.indices)
    c = Image(tmp_path, hub=False, val_size=5, split_seed=1)
    sc = c.splits()
    assert c.cache_path != a.cache_path
    assert not np.array_equal(sa.val.indices, sc.val.indices)
    v = Image(tmp_path, hub=False, val_size=5, input="values")
    v.splits()
    assert v.cache_path == a.cache_path  # encodings are applied on the fly


def test_image_bad_batches(tmp_path):
    write_cifar(tmp_path, n=4)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3 is missing"):
        Image(tmp_path, hub=False, val_size=2).splits()
    write_cifar(tmp_path, n=4)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(p, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d[b"labels"][2] = 12
    with open(p, "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(DataError, match=r"test_batch: label 12 at row 2"):
        Image(tmp_path, hub=False, val_size=2).splits()
    p.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR-10"):
        Image(tmp_path, hub=False, val_size=2).splits()


def test_image_missing_and_bad_options(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*hub/uoft-cs/cifar10"):
        Image(tmp_path, hub=False).splits()
    with pytest.raises(ConfigError, match="input='rgb'"):
        Image(tmp_path, input="rgb")
