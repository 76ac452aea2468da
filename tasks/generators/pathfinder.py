"""Seeded Pathfinder generator (the settings of the LRA release: Linsley et al. 2018, as
used by Tay et al. 2021): the command line, parallel generation and the output layouts.
The drawing is in pathfinder_draw.py.

Each image is made from its own RNG seeded by (seed, resolution, contour length, index),
so the output is identical for any number of worker processes.

    python -m tasks.generators.pathfinder --resolution 32 --difficulty hard --n 200000 --out DIR

writes ``DIR/pathfinder32/curv_contour_length_14/`` in the release layout
(``imgs/<k>/sample_<n>.png`` + ``metadata/<k>.npy`` text lines), or with ``--format cache``
the arrays ``images.npy`` (uint8 [n, res*res]) and ``labels.npy`` that the pathfinder task
memory-maps directly; ``generated.json`` records the parameters either way. Output goes
to a ``.partial`` folder renamed into place when complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tasks.generators.pathfinder_draw import (  # noqa: F401 - re-exported
    _TABLE,
    AA,
    DIFFICULTIES,
    FOLDERS,
    Params,
    folder_name,
    make_image,
    params_for,
)
from tasks.pool import ordered_map

log = logging.getLogger(__name__)

PER_FOLDER = 1000  # images per imgs/<k>/ folder and per metadata/<k>.npy file


# ----------------------------------------------------------------------------- output


def _work(args) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Images i0..i1-1: (i0, pixels or nothing when written as PNGs, labels, margins)."""
    from PIL import Image

    p, seed, i0, i1, png_root = args
    res = p.resolution
    imgs = np.empty((i1 - i0, res * res), np.uint8)
    labels = np.empty(i1 - i0, np.uint8)
    margins = np.empty(i1 - i0, np.uint8)
    made: set[Path] = set()
    for j, i in enumerate(range(i0, i1)):
        img, labels[j], margins[j] = make_image(p, seed, i)
        imgs[j] = img.reshape(-1)
        if png_root is not None:
            d = Path(png_root) / "imgs" / str(i // PER_FOLDER)
            if d not in made:
                d.mkdir(parents=True, exist_ok=True)
                made.add(d)
            Image.fromarray(img, mode="L").save(d / f"sample_{i % PER_FOLDER}.png")
    if png_root is not None:
        imgs = imgs[:0]
    return i0, imgs, labels, margins


def metadata_line(p: Params, i: int, label: int, margin: int) -> str:
    """One release metadata line: subdir filename index label continuity contour_length
    distractor_length paddle_length paddle_thickness paddle_margin n_contrasts."""
    return (
        f"imgs/{i // PER_FOLDER} sample_{i % PER_FOLDER}.png {i % PER_FOLDER} {label} "
        f"{p.continuity} {p.contour_length} {p.distractor_length} {p.dash_length} "
        f"{p.thickness} {margin} 1"
    )


def generate(
    out: str | os.PathLike,
    resolution: int = 32,
    difficulty: str = "hard",
    n: int = 200_000,
    seed: int = 0,
    workers: int | None = None,
    fmt: str = "release",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``n`` images into ``out/pathfinder<res>/<difficulty folder>/``; returns it.

    Written to a ``.partial`` folder renamed into place at the end, so an interrupted run
    never looks complete.
    """
    from tqdm import tqdm

    if fmt not in ("release", "cache"):
        raise ValueError(f"format {fmt!r}: expected release or cache")
    if n < 1:
        raise ValueError(f"n={n}: expected at least one image")
    p = params_for(resolution, difficulty)
    final = Path(out).expanduser() / folder_name(resolution, difficulty)
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"{final} exists; pass --overwrite to replace it")
        shutil.rmtree(final)
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(PER_FOLDER, -(-n // (workers * 8)), 2_000_000 // (resolution * resolution)))
    jobs = [
        (p, seed, i, min(i + chunk, n), tmp if fmt == "release" else None)
        for i in range(0, n, chunk)
    ]
    labels = np.empty(n, np.uint8)
    margins = np.empty(n, np.uint8)
    images = None
    if fmt == "cache":
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, resolution * resolution)
        )
    t0 = time.perf_counter()
    bar = tqdm(total=n, unit="img", disable=not progress, desc=folder_name(resolution, difficulty))
    it = ordered_map(_work, jobs, workers)
    try:
        for i0, imgs, lab, mar in it:
            labels[i0 : i0 + len(lab)] = lab
            margins[i0 : i0 + len(lab)] = mar
            if images is not None:
                images[i0 : i0 + len(lab)] = imgs
            bar.update(len(lab))
    finally:
        it.close()
        bar.close()
    elapsed = time.perf_counter() - t0
    meta = {
        "generator": "tasks.generators.pathfinder",
        "params": asdict(p),
        "difficulty": difficulty,
        "n": n,
        "seed": seed,
        "format": fmt,
        "workers": workers,
        "seconds": round(elapsed, 2),
        "label_mean": float(labels.mean()),
    }
    if images is not None:
        images.flush()
        del images
        np.save(tmp / "labels.npy", labels)
    else:
        (tmp / "metadata").mkdir()
        for k in range(0, -(-n // PER_FOLDER)):
            lines = [
                metadata_line(p, i, int(labels[i]), int(margins[i]))
                for i in range(k * PER_FOLDER, min((k + 1) * PER_FOLDER, n))
            ]
            (tmp / "metadata" / f"{k}.npy").write_text("\n".join(lines) + "\n")
    (tmp / "generated.json").write_text(json.dumps(meta, indent=2))
    tmp.rename(final)
    log.info("wrote %d images to %s in %.1fs (%.0f img/s)", n, final, elapsed, n / elapsed)
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--resolution", type=int, default=32, choices=sorted(_TABLE))
    ap.add_argument("--difficulty", default="hard", choices=list(DIFFICULTIES))
    ap.add_argument("--n", type=int, default=200_000, help="number of images")
    ap.add_argument("--out", required=True, help="data root (the LRA release folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument(
        "--format",
        dest="fmt",
        default="release",
        choices=["release", "cache"],
        help="release: PNG + metadata; cache: images.npy/labels.npy",
    )
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        generate(a.out, a.resolution, a.difficulty, a.n, a.seed, a.workers, a.fmt, a.overwrite)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
