"""Image (LRA): CIFAR-10 in greyscale as a sequence of 1024 pixels, 10 classes.

Sources, first found wins (``describe()["source"]``):
  1. ``<data_dir>/cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch`` pickles);
  2. ``<data_dir>/hub/uoft-cs/cifar10``, a ``datasets`` ``save_to_disk`` folder;
  3. the hub data set ``uoft-cs/cifar10`` via ``datasets.load_dataset`` (``hub: false`` skips).
Greyscale = round(0.2989 R + 0.5870 G + 0.1140 B) as in the LRA pipeline, stored uint8.
Splits: a seeded 45,000 / 5,000 split of the train set (indices stored with the cache), and
the 10,000 test images.

Pixel encodings (shared with Pathfinder), chosen by ``input``:
  * ``tokens``: pixel v -> id v + 1, vocab 257 (id 0 is padding; shifting keeps black
    pixels from being the padding embedding);
  * ``values``: one scalar per position, (v / 255 - mean) / std with the train split's
    mean and std (``input_dim`` 1).
The cache holds the uint8 pixels only, so both encodings share it.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from surnn.checks import boolean, int_at_least
from surnn.errors import ConfigError, DataError
from tasks.base import Splits, Task, check_no_unknown
from tasks.cache import file_signature, load_or_build
from tasks.collate import make_collate
from tasks.datasets import SPLIT_INDICES, seeded_split, split_indices
from tasks.hub import require_hub

log = logging.getLogger(__name__)

PIXEL_VOCAB = 257
INPUTS = ("tokens", "values")
HUB_NAME = "uoft-cs/cifar10"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
GREY = np.array([0.2989, 0.5870, 0.1140], np.float32)
CACHE_FORMAT = 1


# ----------------------------------------------------------------------------- pixels


class PixelDataset(Dataset):
    """Fixed-length uint8 pixel rows; tokens are pixel + 1, values stay uint8 until the
    collate function normalises them."""

    def __init__(self, data: np.ndarray, labels: np.ndarray, input: str):
        self.data, self.labels, self.tokens = data, labels, input == "tokens"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.data[i]
        return (x.astype(np.int16) + 1 if self.tokens else x), int(self.labels[i])


def set_input(task: Task, input: str) -> None:
    """Set input_kind / vocab_size / input_dim for a pixel encoding."""
    if input not in INPUTS:
        raise ConfigError.option(
            "input",
            input,
            "expected tokens (256 levels, vocab 257) or values (normalised scalar, input_dim 1)",
        )
    task.input = input
    if input == "tokens":
        task.input_kind, task.vocab_size, task.input_dim = "tokens", PIXEL_VOCAB, None
    else:
        task.input_kind, task.vocab_size, task.input_dim = "values", None, 1


def pixel_stats(data: np.ndarray, idx: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
    """Mean and std of pixels / 255 over rows ``idx``, in chunks (memory-mapped data)."""
    s = s2 = n = 0.0
    for i in range(0, len(idx), chunk):
        x = np.asarray(data[np.sort(idx[i : i + chunk])], np.float64) / 255.0
        s, s2, n = s + x.sum(), s2 + (x * x).sum(), n + x.size
    mean = s / max(n, 1)
    return float(mean), float(max(s2 / max(n, 1) - mean * mean, 1e-12) ** 0.5)


def pixel_collate(input: str, mean: float, std: float):
    if input == "tokens":
        return make_collate("tokens")

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - mean) / std

    return make_collate("values", value_transform=normalise)


def encoding_info(input: str, mean: float, std: float) -> str:
    if input == "tokens":
        return "256 levels: id = pixel + 1, 0 = pad (vocab 257)"
    return f"values: (pixel/255 - {mean:.4f}) / {std:.4f}, input_dim 1"


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] uint8 -> [N, H*W] uint8 greyscale."""
    g = np.rint(rgb.astype(np.float32) @ GREY)
    return np.clip(g, 0, 255).astype(np.uint8).reshape(len(rgb), -1)


# ----------------------------------------------------------------------------- CIFAR


def read_batch(path: Path, colour: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One cifar-10-batches-py pickle -> (grey [n, 1024] uint8, or with ``colour``
    [n, 1024 * 3] pixel-major RGB, labels)."""
    if not path.is_file():
        raise DataError(
            f"{path} is missing: expected cifar-10-batches-py/data_batch_1..5 and test_batch "
            "(unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into the data folder)"
        )
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], np.uint8)
        labels = np.asarray(d[b"labels"], np.int64)
    except Exception as e:  # noqa: BLE001 - unpickling errors have many types
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e}); re-download it") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"{path}: expected data [n, 3072] and n labels, got {data.shape} and {len(labels)}"
        )
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]} at row {bad[0]} is not in 0-9")
    rgb = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _pixels(rgb, colour), labels.astype(np.uint8)


def _pixels(rgb: np.ndarray, colour: bool) -> np.ndarray:
    """[n, 32, 32, 3] uint8 -> [n, 1024 * 3] pixel-major RGB, or [n, 1024] greyscale."""
    return np.ascontiguousarray(rgb).reshape(len(rgb), -1) if colour else to_grey(rgb)


def build_pixel_cache(task: Task, key: dict, load) -> tuple[dict, dict, Path]:
    """The cached (images, labels, train/val/test indices) of a pixel task for ``key``,
    built once: ``load()`` -> (train x, train y, test x, test y); a seeded ``val_size``
    split of train; ``task.stats(images, train_idx)`` (normalisation) into the metadata."""

    def build(_tmp: Path):
        log.info("%s: building the pixel cache from %s", task.name, task.source)
        xtr, ytr, xte, yte = load()
        n = len(ytr)
        if not 0 < task.val_size < n:
            raise ConfigError(
                f"task={task.name}: task.options.val_size={task.val_size}: the train set "
                f"has {n} images"
            )
        tr, va = seeded_split(n, [1 - task.val_size / n, task.val_size / n], task.split_seed)
        images = np.concatenate([xtr, xte])
        arrays = {
            "images": images,
            "labels": np.concatenate([ytr, yte]),
            **split_indices(tr, va, np.arange(n, n + len(yte))),
        }
        counts = {"train": len(tr), "val": len(va), "test": len(yte)}
        return arrays, {"source": task.source, "counts": counts, **task.stats(images, tr)}

    names = ["images", "labels", *SPLIT_INDICES]
    cache = load_or_build(task, task.cache_name, key, names, build)
    return cache.arrays, cache.meta, cache.path


class Image(Task):
    """Greyscale CIFAR-10 pixels (LRA Image). Also the base of the other pixel tasks
    (tasks/pixel.py): they override ``_read`` (where the pixels come from) and the hooks
    ``dataset``, ``collate``, ``stats`` and ``encoding``."""

    name = "image"
    cache_name = "image"
    n_classes = 10
    max_len = 1024
    colour = False  # read RGB pixels instead of greyscale
    extra_options: tuple[str, ...] = ()  # a subclass's options beyond the shared ones

    def __init__(
        self,
        data_dir,
        input: str = "tokens",
        val_size: int = 5000,
        split_seed: int = 0,
        hub: bool = True,
        **options: Any,
    ):
        extra = {k: options.pop(k) for k in self.extra_options if k in options}
        valid = ", ".join(["input", "val_size", "split_seed", "hub", *self.extra_options])
        check_no_unknown(self.name, options, valid)
        super().__init__(data_dir, input=input, val_size=val_size, split_seed=split_seed, **extra)
        set_input(self, input)
        int_at_least(1).check("val_size", val_size)
        int_at_least(0).check("split_seed", split_seed)
        boolean().check("hub", hub)
        self.val_size, self.split_seed, self.hub = val_size, split_seed, hub
        self.source: str | None = None
        self.info: dict[str, Any] = {}

    def _read(self):
        """(source, signature, loader returning (train x, train y, test x, test y))."""
        colour = self.colour
        root = self.data_dir / "cifar-10-batches-py"
        if root.is_dir():
            names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
            for n in names:
                if not (root / n).is_file():
                    read_batch(root / n)  # raises the DataError naming the missing file

            def load():
                tr = [read_batch(root / n, colour) for n in names[:5]]
                te = read_batch(root / "test_batch", colour)
                return (np.concatenate([t[0] for t in tr]), np.concatenate([t[1] for t in tr]), *te)

            return (
                f"cifar-10-batches-py folder {root}",
                file_signature(root / n for n in names),
                load,
            )
        dd, src = require_hub(self, HUB_NAME, "CIFAR-10", f"{root}/ (unpack {CIFAR_URL} there)")

        def load_hub_split(split):
            if split not in dd:
                raise DataError(f"{src}: has no {split!r} split (found {list(dd)})")
            d = dd[split]
            img_col = "img" if "img" in d.column_names else "image"
            rgb = np.stack([np.asarray(im.convert("RGB"), np.uint8) for im in d[img_col]])
            y = np.asarray(d["label"], np.int64)
            if ((y < 0) | (y > 9)).any():
                raise DataError(f"{src} split {split}: labels outside 0-9")
            return _pixels(rgb, colour), y.astype(np.uint8)

        def load():
            return (*load_hub_split("train"), *load_hub_split("test"))

        sig = [[src, dd["train"].num_rows, dd["train"]._fingerprint]]
        return src, sig, load

    def stats(self, images: np.ndarray, train_idx: np.ndarray) -> dict[str, Any]:
        mean, std = pixel_stats(images, train_idx)
        return {"mean": mean, "std": std}

    def dataset(self, images, labels) -> Dataset:
        return PixelDataset(images, labels, self.input)

    def collate(self):
        return pixel_collate(self.input, self.mean, self.std)

    def encoding(self) -> str:
        return encoding_info(self.input, self.info.get("mean", 0.0), self.info.get("std", 1.0))

    def splits(self) -> Splits:
        src, sig, load = self._read()
        self.source = src
        key = {
            "format": CACHE_FORMAT,
            "source": sig,
            "val_size": self.val_size,
            "seed": self.split_seed,
            **({"colour": True} if self.colour else {}),
        }
        a, meta, path = build_pixel_cache(self, key, load)
        self.cache_path = path
        self.mean, self.std = meta["mean"], meta["std"]
        self.info = {"counts": meta["counts"], "mean": self.mean, "std": self.std}
        base = self.dataset(a["images"], a["labels"])
        return Splits.from_indices(base, a, self.collate())

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "encoding": self.encoding(),
            "source": self.source,
            **self.info,
        }
