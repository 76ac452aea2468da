"""Writers of small data sets in the exact release formats (aclImdb, the AAN pair TSVs,
CIFAR-10 pickles, MNIST IDX files, Pathfinder PNGs with metadata, WikiText token files,
``datasets`` save_to_disk folders):
the loaders are tested on them, and scripts/bench_data.py times the loaders on them. No
real data is needed."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

LONG = "é" * 3000  # 6000 UTF-8 bytes: longer than any max_len the tests use


def write_aclimdb(data_dir: Path, n: int = 3) -> dict[str, list[tuple[bytes, int]]]:
    """aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt; returns split -> [(bytes, label)]
    in the order the task reads them (neg then pos, by numeric id)."""
    out: dict[str, list[tuple[bytes, int]]] = {}
    for split in ("train", "test"):
        out[split] = []
        for label, sub in ((0, "neg"), (1, "pos")):
            d = Path(data_dir) / "aclImdb" / split / sub
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                text = f"{split} {sub} review {i}. Caf\u00e9 <br /> {'!' * i}"
                if i == 1:
                    text += LONG
                b = text.encode("utf-8")
                (d / f"{i * 10}_{7 if label else 2}.txt").write_bytes(b)
                out[split].append((b, label))
    return out


def write_aan(data_dir: Path, rows: dict[str, int] | None = None, seed: int = 0) -> dict:
    """tsv_data/new_aan_pairs.{train,eval,test}.tsv with float labels ('1.0'); returns
    split -> [(label, text1 bytes, text2 bytes)]."""
    rows = rows or {"train": 6, "eval": 3, "test": 3}
    rng = np.random.default_rng(seed)
    d = Path(data_dir) / "tsv_data"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in rows.items():
        recs, lines = [], []
        for i in range(n):
            y = int(rng.integers(2))
            t1 = f"paper {split} {i} abstract " + "x" * int(rng.integers(0, 50))
            t2 = f"other {i} " + (LONG if i == 0 else "words " * int(rng.integers(1, 20)))
            lines.append(f"{float(y)}\t{split}_{i}a\t{split}_{i}b\t{t1}\t{t2}")
            recs.append((y, t1.encode(), t2.encode()))
        (d / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        out[split] = recs
    return out


def write_cifar(data_dir: Path, n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py/data_batch_1..5 (n each) and test_batch (n); returns (RGB
    uint8 [6n, 32, 32, 3], labels [6n]) in file order."""
    rng = np.random.default_rng(seed)
    d = Path(data_dir) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    imgs, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rgb = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        flat = rgb.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane
        batch = {
            b"batch_label": name.encode(),
            b"labels": y.tolist(),
            b"data": flat,
            b"filenames": [f"{k}.png".encode() for k in range(n)],
        }
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
        imgs.append(rgb)
        labels.append(y)
    return np.concatenate(imgs), np.concatenate(labels)


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST's format), gzipped when the name ends in .gz."""
    import gzip

    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    blob = head + np.ascontiguousarray(arr, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


def write_mnist(
    root: Path, n_train: int = 30, n_test: int = 10, gz: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The four MNIST IDX files under root; returns (images uint8 [n, 28, 28], labels [n]),
    train then test."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n_train + n_test).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{ext}", x[:n_train])
    write_idx(root / f"train-labels-idx1-ubyte{ext}", y[:n_train])
    write_idx(root / f"t10k-images-idx3-ubyte{ext}", x[n_train:])
    write_idx(root / f"t10k-labels-idx1-ubyte{ext}", y[n_train:])
    return x, y


def write_pathfinder_pngs(
    data_dir: Path,
    folder: str,
    images: np.ndarray,
    labels: np.ndarray,
    per_folder: int = 4,
    empty: tuple[int, ...] = (),
    names: dict[int, tuple[int, int]] | None = None,
) -> Path:
    """Release layout under data_dir/folder: imgs/<k>/sample_<n>.png + metadata/<k>.npy.
    Indices in ``empty`` get a 0-byte PNG; ``names`` overrides (k, n) per index."""
    from PIL import Image

    root = Path(data_dir) / folder
    meta: dict[int, list[str]] = {}
    for i, (img, y) in enumerate(zip(images, labels)):
        k, n = (names or {}).get(i, (i // per_folder, i % per_folder))
        p = root / "imgs" / str(k) / f"sample_{n}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        if i in empty:
            p.write_bytes(b"")
        else:
            Image.fromarray(img, mode="L").save(p)
        meta.setdefault(k, []).append(f"imgs/{k} sample_{n}.png {n} {int(y)} 1.0 14 4 2 0.5 1 1")
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for k, lines in meta.items():
        (root / "metadata" / f"{k}.npy").write_text("\n".join(lines) + "\n")
    return root


def random_images(n: int, res: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, res, res), dtype=np.uint8), rng.integers(0, 2, n)


WIKI_WORDS = [
    "the",
    "of",
    "and",
    "in",
    "to",
    "a",
    "was",
    "@-@",
    ",",
    ".",
    "is",
    "for",
    "as",
    "on",
    "with",
    "by",
    "he",
    "<unk>",
    "at",
    "from",
]


def write_wikitext(
    data_dir: Path,
    release: str = "wikitext-2",
    raw: bool = False,
    articles: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """The WikiText release layout: ``<release>/wiki.{train,valid,test}.tokens`` (or
    ``<release>-raw/wiki.*.raw``): articles headed `` = Title = ``, `` = = Section = = ``
    subheadings, blank `` `` lines between, paragraphs of space-separated words with
    `` @-@ `` and ``<unk>`` (not in the raw files), every line ending in `` \\n``. Returns
    split name (train/valid/test) -> the file's lines."""
    rng = np.random.default_rng(seed)
    articles = articles or {"train": 3, "valid": 1, "test": 1}
    folder = Path(data_dir) / (release + ("-raw" if raw else ""))
    folder.mkdir(parents=True, exist_ok=True)
    vocab = [w for w in WIKI_WORDS if not (raw and w == "<unk>")]
    out = {}
    for split, n in articles.items():
        lines = [" \n"]
        if split == "train":  # every word once, so valid/test hold no word train lacks
            lines += [" = " + " ".join(vocab) + " = \n", " \n"]
        for _ in range(n):
            title = " ".join(rng.choice(vocab, 2))
            lines += [f" = {title} = \n", " \n"]
            for sec in range(2):
                if sec:
                    lines += [f" = = Section {sec} = = \n", " \n"]
                words = rng.choice(vocab, int(rng.integers(8, 30)))
                lines += [" " + " ".join(words) + " \n", " \n"]
        (folder / f"wiki.{split}.{'raw' if raw else 'tokens'}").write_text(
            "".join(lines), encoding="utf-8"
        )
        out[split] = lines
    return out


def write_hub(data_dir: Path, hub_name: str, splits: dict[str, dict], features=None) -> Path:
    """``<data_dir>/hub/<hub_name>``, a ``datasets`` save_to_disk folder of the given
    splits (split -> column -> values), as a copy of a hub data set is saved."""
    import datasets

    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_dict(cols, features=features) for s, cols in splits.items()}
    )
    folder = Path(data_dir) / "hub" / hub_name
    dd.save_to_disk(str(folder))
    return folder
