"""The paper's pixel-level benchmarks: sequential MNIST, permuted MNIST, sequential CIFAR.

* ``smnist``: MNIST digits as 784 pixels in raster order, 10 classes.
* ``psmnist``: the same pixels in one fixed random order (``permutation_seed``), the same
  for every image, split and run with that seed.
* ``scifar``: CIFAR-10 in colour as 1024 pixels of 3 channels (``input_dim`` 3, values only),
  the sequential-CIFAR setting of LSSL/S4 (the LRA Image task is the greyscale one).

MNIST sources, first found wins (``describe()["source"]``):
  1. ``<data_dir>/mnist/`` or ``<data_dir>/MNIST/raw/`` (torchvision's layout) with the four
     IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
     ``t10k-labels-idx1-ubyte``, each plain or ``.gz``;
  2. ``<data_dir>/hub/ylecun/mnist``, a ``datasets`` ``save_to_disk`` folder;
  3. the hub data set ``ylecun/mnist`` (``hub: false`` skips).
CIFAR-10 is read as by the Image task (``cifar-10-batches-py/`` or the hub).

Splits: a seeded ``val_size`` split of the train set (default 5,000; indices stored with
the cache) and the test set. The cache holds uint8 pixels; ``values`` inputs are normalised
by the train split's mean and std (per channel for scifar), ``tokens`` (MNIST only) are
pixel + 1 with vocab 257.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surnn.checks import int_at_least
from surnn.errors import ConfigError, DataError
from tasks.cache import file_signature
from tasks.collate import make_collate
from tasks.hub import require_hub
from tasks.image import Image, PixelDataset

MNIST_HUB = "ylecun/mnist"
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/ (the four *-ubyte.gz files)"


# ----------------------------------------------------------------------------- IDX files


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (plain or gzip) of unsigned bytes with ``ndim`` dimensions."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable ({e}); re-download it ({MNIST_URL})") from e
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimensions (header "
            f"{raw[:4].hex() or 'empty'}, expected 000008{ndim:02x}); re-download it ({MNIST_URL})"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(
            f"{path}: header says {'x'.join(map(str, dims))} = {int(np.prod(dims))} bytes, the "
            f"file holds {body.size}: truncated or corrupt; re-download it ({MNIST_URL})"
        )
    return body.reshape(dims)


def _find(root: Path, name: str) -> Path | None:
    for p in (root / name, root / f"{name}.gz"):
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------- datasets


class PermutedPixels(PixelDataset):
    """Pixel rows read in a fixed order ``perm`` (psMNIST)."""

    def __init__(self, data, labels, input: str, perm: np.ndarray):
        super().__init__(data, labels, input)
        self.perm = perm

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return x[self.perm], y


class ColourPixels(torch.utils.data.Dataset):
    """[n, L * C] uint8 rows -> [L, C] uint8 (normalised per channel in the collate)."""

    def __init__(self, data, labels, channels: int):
        self.data, self.labels, self.c = data, labels, channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return np.asarray(self.data[i]).reshape(-1, self.c), int(self.labels[i])


# ----------------------------------------------------------------------------- tasks


def mnist_files(data_dir: Path) -> tuple[Path, dict[str, Path]] | None:
    """The first of ``<data_dir>/mnist/`` and ``<data_dir>/MNIST/raw/`` holding any MNIST IDX
    file, with the four files found there (plain or .gz); None when neither holds one.
    A folder with only some of them is a DataError naming the missing ones."""
    for root in (data_dir / "mnist", data_dir / "MNIST" / "raw"):
        found = {k: _find(root, f) for k, f in MNIST_FILES.items()}
        if not any(found.values()):
            continue
        missing = [f for k, f in MNIST_FILES.items() if found[k] is None]
        if missing:
            raise DataError(
                f"{root} lacks {', '.join(missing)} (plain or .gz); get them from {MNIST_URL}"
            )
        return root, found
    return None


def _load_idx(found: dict[str, Path]) -> list[np.ndarray]:
    """(train x [n, 784], train y, test x, test y) from the four IDX files."""
    parts = []
    for split in ("train", "test"):
        x = read_idx(found[f"{split}_x"], 3)
        y = read_idx(found[f"{split}_y"], 1)
        if len(x) != len(y) or x.shape[1:] != (28, 28):
            raise DataError(
                f"{found[f'{split}_x']}: {x.shape} images for {len(y)} labels in "
                f"{found[f'{split}_y']}; expected [n, 28, 28] and n labels"
            )
        if (y > 9).any():
            row = int(np.flatnonzero(y > 9)[0])
            raise DataError(f"{found[f'{split}_y']}: label {int(y[row])} at item {row} is not 0-9")
        parts += [x.reshape(len(x), -1), y]
    return parts


class SMNIST(Image):
    """MNIST as a sequence of 784 pixels (raster order), 10 classes. Options, cache,
    splits and encodings as the Image task's (``values`` by default)."""

    name = "smnist"
    cache_name = "mnist"  # smnist and psmnist share the cached pixels
    n_classes = 10
    max_len = 784

    def __init__(self, data_dir, input: str = "values", **options: Any):
        super().__init__(data_dir, input=input, **options)

    def _read(self):
        """(source, signature, loader -> (train x [n, 784], train y, test x, test y))."""
        try:
            files = mnist_files(self.data_dir)
        except DataError as e:
            raise DataError(f"task={self.name}: {e}") from None
        if files is not None:
            root, found = files
            sig = file_signature(sorted(found.values()))
            return f"IDX files in {root}", sig, lambda: _load_idx(found)
        local = f"{self.data_dir / 'mnist'}/ with the four IDX files ({MNIST_URL})"
        dd, src = require_hub(self, MNIST_HUB, "MNIST", local)

        def split(name):
            if name not in dd:
                raise DataError(f"{src}: has no {name!r} split (found {list(dd)})")
            d = dd[name]
            x = np.stack([np.asarray(im.convert("L"), np.uint8).reshape(-1) for im in d["image"]])
            y = np.asarray(d["label"], np.int64)
            if x.shape[1] != 784 or ((y < 0) | (y > 9)).any():
                raise DataError(f"{src} split {name}: expected 28x28 images and labels 0-9")
            return x, y.astype(np.uint8)

        sig = [[src, dd["train"].num_rows, dd["train"]._fingerprint]]
        return src, sig, lambda: (*split("train"), *split("test"))


class PSMNIST(SMNIST):
    """MNIST pixels in one fixed random order (``permutation_seed``)."""

    name = "psmnist"
    extra_options = ("permutation_seed",)

    def __init__(self, data_dir, permutation_seed: int = 0, **options: Any):
        super().__init__(data_dir, permutation_seed=permutation_seed, **options)
        int_at_least(0).check("permutation_seed", permutation_seed)
        self.permutation_seed = permutation_seed
        self.perm = permutation(permutation_seed)

    def dataset(self, images, labels):
        return PermutedPixels(images, labels, self.input, self.perm)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "permutation_seed": self.permutation_seed}


def permutation(seed: int, n: int = 784) -> np.ndarray:
    """The psMNIST pixel order: the same on every machine and numpy version."""
    return np.random.Generator(np.random.PCG64(seed)).permutation(n)


class SCIFAR(Image):
    """CIFAR-10 in colour: 1024 pixels of 3 channels, normalised per channel."""

    name = "scifar"
    cache_name = "scifar"
    n_classes = 10
    max_len = 1024
    colour = True

    def __init__(self, data_dir, input: str = "values", **options: Any):
        if input != "values":
            raise ConfigError.option(
                "input",
                input,
                "sequential CIFAR takes the 3 colour channels as values (input_dim 3); for "
                "greyscale tokens use task=image",
            )
        super().__init__(data_dir, input="values", **options)
        self.input_dim = 3

    def dataset(self, images, labels):
        return ColourPixels(images, labels, 3)

    def collate(self):
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)

        def normalise(x: torch.Tensor) -> torch.Tensor:
            return (x / 255.0 - mean) / std

        return make_collate("values", value_transform=normalise)

    def stats(self, images: np.ndarray, train_idx: np.ndarray) -> dict[str, Any]:
        """Per-channel mean and std of the train split (pixels / 255)."""
        s = np.zeros(3)
        s2 = np.zeros(3)
        n = 0
        for i in range(0, len(train_idx), 4096):
            x = images[np.sort(train_idx[i : i + 4096])].reshape(-1, 3).astype(np.float64) / 255
            s, s2, n = s + x.sum(0), s2 + (x * x).sum(0), n + len(x)
        mean = s / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean * mean, 1e-12))
        return {"mean": mean.tolist(), "std": std.tolist()}

    def encoding(self) -> str:
        return "values: per-channel (pixel/255 - mean) / std of the train split, input_dim 3"
