"""The paper's pixel-level tasks (smnist, psmnist, scifar) on files in the real formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surnn.errors import ConfigError, DataError
from tasks.formats import write_cifar, write_hub, write_idx, write_mnist
from tasks.pixel import PSMNIST, SCIFAR, SMNIST, permutation, read_idx


def test_smnist_raster_pixels_splits_and_values(tmp_path):
    x, y = write_mnist(tmp_path / "mnist", n_train=30, n_test=10)
    t = SMNIST(tmp_path, val_size=5, hub=False)
    s = t.splits()
    assert (len(s.train), len(s.val), len(s.test)) == (25, 5, 10)
    assert t.max_len == 784 and t.input_kind == "values" and t.input_dim == 1
    for k in (0, 9):  # the test set in file order, pixels in raster order
        px, label = s.test[k]
        np.testing.assert_array_equal(px, x[30 + k].reshape(-1))
        assert label == y[30 + k]
    assert sorted(np.concatenate([s.train.indices, s.val.indices]).tolist()) == list(range(30))
    b = s.collate([s.train[j] for j in range(len(s.train))])
    assert b["x"].shape == (25, 784, 1) and b["lengths"].eq(784).all()
    assert abs(float(b["x"].mean())) < 1e-4 and abs(float(b["x"].std()) - 1) < 1e-2
    tok = SMNIST(tmp_path, input="tokens", val_size=5, hub=False)
    st = tok.splits()
    np.testing.assert_array_equal(st.test[0][0], x[30].reshape(-1).astype(np.int64) + 1)
    assert tok.vocab_size == 257 and tok.describe()["source"].startswith("IDX files")


def test_psmnist_is_one_fixed_permutation_and_shares_the_cache(tmp_path):
    x, _ = write_mnist(tmp_path / "MNIST" / "raw", gz=True)  # torchvision's layout, gzipped
    SMNIST(tmp_path, val_size=5, hub=False).splits()
    p = PSMNIST(tmp_path, val_size=5, hub=False)
    s = p.splits()
    perm = permutation(0)
    assert sorted(perm.tolist()) == list(range(784)) and not np.array_equal(perm, np.arange(784))
    for k in (0, 3):
        np.testing.assert_array_equal(s.test[k][0], x[30 + k].reshape(-1)[perm])
    np.testing.assert_array_equal(PSMNIST(tmp_path, hub=False).perm, perm)  # fixed by the seed
    assert not np.array_equal(PSMNIST(tmp_path, permutation_seed=1, hub=False).perm, perm)
    assert len(list((tmp_path / "cache" / "mnist").iterdir())) == 1  # pixels cached once
    assert p.describe()["permutation_seed"] == 0


def test_mnist_bad_files_name_the_file_and_the_fix(tmp_path):
    root = tmp_path / "mnist"
    write_mnist(root)
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte.*ossci-datasets"):
        SMNIST(tmp_path, hub=False).splits()
    write_idx(root / "t10k-labels-idx1-ubyte", np.array([1, 2, 12] + [0] * 7, np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 12 at item 2"):
        SMNIST(tmp_path, val_size=5, hub=False).splits()
    f = root / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte: header says 30x28x28.*truncated"
    ):
        read_idx(f, 3)
    f.write_bytes(b"\x00\x00\x0d\x03" + bytes(20))
    with pytest.raises(DataError, match=r"not an IDX file of unsigned bytes"):
        read_idx(f, 3)
    with pytest.raises(DataError, match=r"no MNIST under .*mnist/ with the four IDX files.*hub"):
        SMNIST(tmp_path / "empty", hub=False).splits()
    with pytest.raises(ConfigError, match="unknown options.*permutation_seed"):
        SMNIST(tmp_path, permutation_seed=3)
    with pytest.raises(ConfigError, match="val_size"):
        SMNIST(tmp_path, val_size=0)


def test_mnist_reads_a_datasets_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    parts = {"train": imgs[:6], "test": imgs[6:]}
    cols = {
        s: {"image": [PILImage.fromarray(im) for im in p], "label": [3] * len(p)}
        for s, p in parts.items()
    }
    write_hub(tmp_path, "ylecun/mnist", cols, feats)
    t = SMNIST(tmp_path, val_size=2, hub=False)
    s = t.splits()
    assert "save_to_disk" in t.describe()["source"] and len(s.test) == 2
    np.testing.assert_array_equal(s.test[1][0], imgs[7].reshape(-1))


def test_scifar_colour_pixels_normalised_per_channel(tmp_path):
    rgb, y = write_cifar(tmp_path, n=20)
    t = SCIFAR(tmp_path, val_size=10, hub=False)
    s = t.splits()
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    assert t.input_kind == "values" and t.input_dim == 3 and t.max_len == 1024
    px, label = s.test[4]
    np.testing.assert_array_equal(px, rgb[104].reshape(1024, 3))  # raster order, RGB
    assert label == y[104]
    b = s.collate([s.train[j] for j in range(len(s.train))])
    assert b["x"].shape == (90, 1024, 3)
    assert torch.allclose(b["x"].mean((0, 1)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(b["x"].std((0, 1)), torch.ones(3), atol=1e-2)
    assert len(t.describe()["mean"]) == 3
    with pytest.raises(ConfigError, match="^input='tokens': .*task=image"):
        SCIFAR(tmp_path, input="tokens")
    with pytest.raises(ConfigError, match=r"task=scifar: unknown options \['colour'\]"):
        SCIFAR(tmp_path, colour=True)
