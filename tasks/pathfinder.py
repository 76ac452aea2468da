"""Pathfinder and Path-X (LRA): are the two markers on one contour? 2 classes.

Data: ``<data_dir>/pathfinder<res>/<folder>/`` with folder ``curv_baseline`` (easy),
``curv_contour_length_9`` (medium) or ``curv_contour_length_14`` (hard, the LRA task), in
either layout:
  * release: ``imgs/<k>/sample_<n>.png`` + ``metadata/<k>.npy`` (text lines
    ``subdir filename index label ...``), decoded in parallel into a uint8 cache;
  * generated (``python -m tasks.generators.pathfinder ... --format cache``):
    ``images.npy`` uint8 [n, res*res] + ``labels.npy``, memory-mapped as they are.
When neither exists the task raises a DataError with the exact generate command, or,
with ``generate: true`` (or a dict of n / seed / workers), generates it first.

Splits: 80 / 10 / 10 % (160k / 20k / 20k of 200k) by ``split_seed``; the indices are
stored with the cache. The known empty PNG of the release
(``pathfinder32/curv_baseline/imgs/0/sample_172.png``) is skipped, counted, logged and
listed in ``describe()``; any other empty or unreadable PNG, malformed metadata line or
label other than 0/1 is a DataError naming the file and line (``skip_unreadable: true``
skips and reports those too). Pixel encodings as in tasks/image.py (``input``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from surnn.checks import boolean, int_at_least, one_of
from surnn.errors import ConfigError, DataError
from tasks.base import Splits, Task, check_no_unknown
from tasks.cache import file_signature, files_digest, load_or_build, writing
from tasks.datasets import SPLIT_INDICES, seeded_split, split_indices
from tasks.generators import pathfinder as gen
from tasks.image import PixelDataset, encoding_info, pixel_collate, pixel_stats, set_input
from tasks.pool import ordered_map

log = logging.getLogger(__name__)

KNOWN_EMPTY = frozenset({"pathfinder32/curv_baseline/imgs/0/sample_172.png"})
FRACTIONS = (0.8, 0.1, 0.1)
EXPECTED_IMAGES = 200_000
CACHE_FORMAT = 1


def generate_command(data_dir: Path, resolution: int, difficulty: str, n: int = 200_000) -> str:
    return (
        f"python -m tasks.generators.pathfinder --resolution {resolution} "
        f"--difficulty {difficulty} --n {n} --out {data_dir} --format cache"
    )


def read_metadata(root: Path) -> list[tuple[str, int, str, int]]:
    """(image path relative to root, label, metadata file, line) for every listed image."""
    meta = root / "metadata"
    files = sorted(
        meta.glob("*.npy"),
        key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name),
    )
    if not files:
        raise DataError(f"{meta}: no metadata/<k>.npy files; restore them from lra_release.gz")
    out = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, start=1):
                cols = line.split()
                if not cols:
                    continue
                if len(cols) < 4:
                    raise DataError(
                        f"{f}:{lineno}: expected 'subdir filename index label ...' (at least 4 "
                        f"fields), got {len(cols)}; fix or delete that line"
                    )
                try:
                    y = float(cols[3])
                except ValueError:
                    y = -1.0
                if y not in (0.0, 1.0):
                    raise DataError(f"{f}:{lineno}: label {cols[3]!r} is not 0 or 1; fix that line")
                out.append((f"{cols[0]}/{cols[1]}", int(y), f.name, lineno))
    return out


def _generated_info(root: Path) -> dict[str, Any]:
    """The generator's record ``generated.json`` ({} when absent); garbled is a DataError."""
    path = root / "generated.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_bytes())
    except ValueError as e:
        raise DataError(
            f"{path}: not valid JSON ({e}); delete {root} and generate it anew"
        ) from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object; delete {root} and generate it anew")
    return info


def _existing_digest(paths: list[Path]) -> str:
    """files_digest of the listed images; a missing one counts as absent (the cache
    build then reports it with its metadata line)."""
    return files_digest(p for p in paths if p.exists())


def _decode(args) -> tuple[int, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Decode a chunk of PNGs: (start, images, ok mask, [(index, reason)] of skipped)."""
    from PIL import Image as PILImage

    start, entries, root, rel_root, res, skip_unreadable = args
    imgs = np.zeros((len(entries), res * res), np.uint8)
    ok = np.ones(len(entries), bool)
    skipped = []
    for j, (rel, _, mfile, lineno) in enumerate(entries):
        p = Path(root) / rel
        where = f"{p} (metadata/{mfile}:{lineno})"
        reason = None
        try:
            if p.stat().st_size == 0:
                reason = "empty file"
            else:
                with PILImage.open(p) as im:
                    a = np.asarray(im.convert("L"), np.uint8)
                if a.shape != (res, res):
                    raise DataError(f"{where}: image is {a.shape}, expected {res}x{res}")
                imgs[j] = a.reshape(-1)
        except FileNotFoundError:
            reason = "missing file"
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files
            reason = f"unreadable ({type(e).__name__})"
        if reason is not None:
            known = f"{rel_root}/{rel}" in KNOWN_EMPTY
            if not (known or skip_unreadable):
                raise DataError(
                    f"{where}: {reason}; restore it from lra_release.gz, delete its metadata line, "
                    "or set task.options.skip_unreadable=true to skip and count such images"
                )
            ok[j] = False
            skipped.append((start + j, f"{rel_root}/{rel}: {reason}"))
    return start, imgs, ok, skipped


class Pathfinder(Task):
    """Pathfinder images as pixel sequences (LRA Pathfinder; Path-X at 128 px)."""

    name = "pathfinder"
    n_classes = 2

    def __init__(
        self,
        data_dir,
        resolution: int = 32,
        difficulty: str = "hard",
        input: str = "tokens",
        split_seed: int = 0,
        generate: bool | dict | None = False,
        skip_unreadable: bool = False,
        workers: int | None = None,
        **options: Any,
    ):
        valid = "resolution, difficulty, input, split_seed, generate, skip_unreadable, workers"
        check_no_unknown(self.name, options, valid)
        super().__init__(data_dir, resolution=resolution, difficulty=difficulty, input=input)
        one_of(32, 64, 128, 256).check("resolution", resolution)
        if difficulty not in gen.DIFFICULTIES:
            raise ConfigError.option(
                "difficulty",
                difficulty,
                "expected easy (contour length 6), medium (9) or hard (14)",
            )
        set_input(self, input)
        int_at_least(0).check("split_seed", split_seed)
        boolean().check("skip_unreadable", skip_unreadable)
        int_at_least(1, optional=True).check("workers", workers)
        self.resolution, self.difficulty, self.split_seed = resolution, difficulty, split_seed
        self.max_len = resolution * resolution
        self.generate = self._generate_options(generate)
        self.skip_unreadable, self.workers = bool(skip_unreadable), workers
        self.root = self.data_dir / gen.folder_name(resolution, difficulty)
        self.source = None
        self.info: dict[str, Any] = {}

    @staticmethod
    def _generate_options(g) -> dict | None:
        if g in (None, False):
            return None
        opts = {"n": EXPECTED_IMAGES, "seed": 0, "workers": None}
        if g is True:
            return opts
        if not (isinstance(g, dict) and set(g) <= set(opts)):
            raise ConfigError.option(
                "generate", g, f"expected false, true or a dict of {', '.join(opts)}"
            )
        int_at_least(1).check("generate.n", g.get("n", 1))
        int_at_least(0).check("generate.seed", g.get("seed", 0))
        int_at_least(1, optional=True).check("generate.workers", g.get("workers"))
        return {**opts, **g}

    def _check_generated(self) -> None:
        """Generated arrays made with another n or seed than task.options.generate asks
        for are not silently used in their place (a quick 2,000-image set would otherwise
        stand in for the 200,000 of the config)."""
        g, info_path = self.generate, self.root / "generated.json"
        if g is None or not info_path.is_file():
            return  # generate: false uses whatever is there
        info = _generated_info(self.root)
        if (info.get("n"), info.get("seed")) != (g["n"], g["seed"]):
            raise DataError(
                f"task={self.name}: {self.root} holds {info.get('n')} generated images (seed "
                f"{info.get('seed')}), but task.options.generate asks for n={g['n']} (seed "
                f"{g['seed']}): set task.options.generate.n={info.get('n')} "
                f"task.options.generate.seed={info.get('seed')} to use them, "
                f"task.options.generate=false to use whatever is there, or delete {self.root} "
                "to generate anew"
            )

    def _ensure_data(self) -> str:
        """'release' or 'generated' (the layout found), generating first when allowed."""
        if (self.root / "metadata").is_dir():
            return "release"
        if (self.root / "images.npy").is_file():
            self._check_generated()
            return "generated"
        if self.generate is None:
            raise DataError(
                f"task={self.name}: no data at {self.root} (expected imgs/ + metadata/ of the LRA "
                "release, or generated arrays); generate it with: "
                + generate_command(self.data_dir, self.resolution, self.difficulty)
                + f" -- or set task.options.generate=true (configs/task/{self.name}.yaml)"
            )
        g = self.generate
        command = generate_command(self.data_dir, self.resolution, self.difficulty, g["n"])
        fix = f"generate it where it can be written: {command}"
        with writing(self, self.root, "pathfinder-generate", f"no data at {self.root}", fix):
            if (self.root / "images.npy").is_file():  # generated by another process meanwhile
                self._check_generated()
                return "generated"
            log.warning(
                "%s: %s is absent; generating %d images (seed %d) = %s",
                self.name,
                self.root,
                g["n"],
                g["seed"],
                command,
            )
            gen.generate(
                self.data_dir,
                self.resolution,
                self.difficulty,
                g["n"],
                g["seed"],
                g["workers"],
                "cache",
            )
        return "generated"

    def _build_release(self, tmp: Path) -> tuple[np.ndarray, np.ndarray, list]:
        entries = read_metadata(self.root)
        res, n = self.resolution, len(entries)
        images = np.lib.format.open_memmap(tmp / "all.npy", "w+", np.uint8, (n, res * res))
        keep = np.ones(n, bool)
        skipped: list[tuple[int, str]] = []
        chunk = 1000
        rel_root = gen.folder_name(self.resolution, self.difficulty)
        jobs = [
            (i, entries[i : i + chunk], self.root, rel_root, res, self.skip_unreadable)
            for i in range(0, n, chunk)
        ]
        workers = self.workers or min(os.cpu_count() or 1, 8)
        it = ordered_map(_decode, jobs, workers if n > 4 * chunk else 1)
        try:
            from tqdm import tqdm

            with tqdm(total=n, unit="img", desc=f"decode {rel_root}", disable=n < 20_000) as bar:
                for start, imgs, ok, sk in it:
                    images[start : start + len(imgs)] = imgs
                    keep[start : start + len(imgs)] = ok
                    skipped += sk
                    bar.update(len(imgs))
        finally:
            it.close()
        labels = np.array([e[1] for e in entries], np.uint8)
        rows = np.flatnonzero(keep)
        for _, why in skipped:
            log.warning("%s: skipped %s", self.name, why)
        if rows.size < n:  # compact: the cache holds only usable images
            out = np.lib.format.open_memmap(
                tmp / "images.npy", "w+", np.uint8, (rows.size, res * res)
            )
            for i in range(0, rows.size, 8192):
                out[i : i + 8192] = images[rows[i : i + 8192]]
            out.flush()
            del images
            (tmp / "all.npy").unlink()
        else:
            images.flush()
            del images
            (tmp / "all.npy").rename(tmp / "images.npy")
        return labels[rows], rows, [w for _, w in skipped]

    def splits(self) -> Splits:
        layout = self._ensure_data()
        if layout == "release":
            # every listed PNG too (a stat each, ~1.5 s for 200k local files): an image
            # edited or replaced in place must not keep serving the old cache
            meta = sorted((self.root / "metadata").glob("*.npy"))
            pngs = [self.root / rel for rel, *_ in read_metadata(self.root)]
            sig = [file_signature(meta), _existing_digest(pngs)]
        else:
            sig = file_signature([self.root / "images.npy", self.root / "labels.npy"])
        key = {
            "format": CACHE_FORMAT,
            "layout": layout,
            "source": sig,
            "resolution": self.resolution,
            "difficulty": self.difficulty,
            "split_seed": self.split_seed,
            "skip_unreadable": self.skip_unreadable,
        }
        names = ["labels", *SPLIT_INDICES]
        if layout == "release":
            names.append("images")  # decoded from the PNGs; generated arrays are read in place

        def build(tmp: Path):
            return self._build_cache(tmp, layout)

        cache = load_or_build(self, "pathfinder", key, names, build)
        a, meta, path = cache.arrays, cache.meta, cache.path
        if layout == "release":
            src_images, images = path / "images.npy", a["images"]
        else:
            src_images = self.root / "images.npy"
            images = np.load(src_images, mmap_mode="r")
        if images.shape[1] != self.max_len or len(images) != len(a["labels"]):
            raise DataError(
                f"{src_images}: shape {images.shape} does not match {len(a['labels'])} labels of "
                f"{self.resolution}x{self.resolution} images; delete {path} and the data, regenerate"
            )
        self.cache_path, self.source = path, meta["source"]
        self.mean, self.std = meta["mean"], meta["std"]
        self.info = {
            k: meta[k] for k in ("counts", "skipped", "n_skipped", "label_mean", "mean", "std")
        }
        base = PixelDataset(images, a["labels"], self.input)
        return Splits.from_indices(base, a, pixel_collate(self.input, self.mean, self.std))

    def _build_cache(self, tmp: Path, layout: str) -> tuple[dict, dict]:
        """Labels, the seeded split and pixel statistics (and, from the release's PNGs,
        the decoded images written into ``tmp``) for the cache."""
        if layout == "release":
            log.info("%s: decoding %s into the cache", self.name, self.root)
            labels, _, skipped = self._build_release(tmp)
            images = np.load(tmp / "images.npy", mmap_mode="r")
            source = f"release {self.root}"
        else:
            images = np.load(self.root / "images.npy", mmap_mode="r")
            labels = np.load(self.root / "labels.npy")
            skipped = []
            info = _generated_info(self.root)
            source = f"generated {self.root} (seed {info.get('seed')}, n {info.get('n')})"
            if labels.ndim != 1 or len(labels) != len(images) or not np.isin(labels, (0, 1)).all():
                raise DataError(
                    f"{self.root}/labels.npy: expected {len(images)} labels in {{0, 1}}"
                )
        n = len(labels)
        tr, va, te = seeded_split(n, FRACTIONS, self.split_seed)
        if min(len(tr), len(va), len(te)) == 0:
            raise DataError(
                f"{self.root}: {n} usable images leave an empty split at 80/10/10 %; need at least 10"
            )
        mean, std = pixel_stats(images, tr)
        del images
        meta = {
            "source": source,
            "counts": {"train": len(tr), "val": len(va), "test": len(te)},
            "skipped": skipped[:20],
            "n_skipped": len(skipped),
            "label_mean": {
                s: float(labels[i].mean()) for s, i in (("train", tr), ("val", va), ("test", te))
            },
            "mean": mean,
            "std": std,
        }
        if n != EXPECTED_IMAGES:
            log.info("%s: %d images (the LRA release has %d)", self.name, n, EXPECTED_IMAGES)
        arrays = {"labels": labels.astype(np.uint8), **split_indices(tr, va, te)}
        return arrays, meta

    def describe(self) -> dict[str, Any]:
        info = dict(self.info)
        enc = encoding_info(self.input, info.get("mean", 0.0), info.get("std", 1.0))
        return {
            **super().describe(),
            "resolution": self.resolution,
            "difficulty": self.difficulty,
            "encoding": enc,
            "source": self.source,
            **info,
        }


class PathX(Pathfinder):
    """Path-X: Pathfinder at 128 x 128 (16,384 steps), hard contours by default."""

    name = "pathx"

    def __init__(self, data_dir, resolution: int = 128, **options: Any):
        if resolution != 128:
            raise ConfigError.option(
                "resolution",
                resolution,
                "Path-X is 128 px (use task=pathfinder with task.options.resolution for other "
                "sizes)",
            )
        super().__init__(data_dir, resolution=128, **options)
