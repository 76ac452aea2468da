"""Data throughput: examples/s of each loader from its cache, images/s of the generators.

    python scripts/bench_data.py [--out results/bench/data.json] [--quick] [--figure]

Loaders are timed on synthetic data written in the release formats with realistic sizes
(IMDB-length reviews, 4000-byte AAN documents, CIFAR pickles, generated Pathfinder,
random 128 px Path-X PNGs): the cache is built first (not timed), then the train split is
read through a DataLoader (batch 64, collate included, no workers), i.e. the cost per
example a training step pays. Generators are timed end to end (processes, PNG writing), in wall time and in CPU time
per image (parent + workers), which gives the rate on cores nobody else uses.
Loaders run with one torch thread (as DataLoader workers do). The load average is
recorded: on a shared machine the numbers are lower bounds.
``--figure`` also writes results/figures/pathfinder_samples.png (generated samples with
their labels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from surnn.provenance import command_line, cpu_model, git_commit, now_iso
from tasks.formats import write_cifar, write_pathfinder_pngs
from tasks.generators import pathfinder as gen

ROOT = Path(__file__).resolve().parents[1]


def write_imdb_like(d: Path, n: int, rng) -> None:
    for split in ("train", "test"):
        for sub in ("neg", "pos"):
            p = d / "aclImdb" / split / sub
            p.mkdir(parents=True, exist_ok=True)
            for i in range(n // 2):
                k = int(rng.integers(200, 5000))  # IMDB reviews: ~1,300 bytes on average
                (p / f"{i}_5.txt").write_bytes(rng.integers(32, 127, k, dtype=np.uint8).tobytes())


def write_aan_like(d: Path, n: int, rng) -> None:
    (d / "tsv_data").mkdir(parents=True, exist_ok=True)
    for split, m in (("train", n), ("eval", n // 10), ("test", n // 10)):
        with open(d / "tsv_data" / f"new_aan_pairs.{split}.tsv", "w") as f:
            for i in range(m):
                t1, t2 = (
                    rng.integers(97, 123, 12000, dtype=np.uint8).tobytes().decode() for _ in "ab"
                )
                f.write(f"{float(i % 2)}\ta{i}\tb{i}\t{t1}\t{t2}\n")


def time_loader(task, batch_size: int = 64, max_examples: int = 4096) -> dict:
    from torch.utils.data import DataLoader, Subset

    t0 = time.perf_counter()
    s = task.splits()  # builds the cache
    build = time.perf_counter() - t0
    s = task.splits()  # now reads the cache
    train = s.train if len(s.train) <= max_examples else Subset(s.train, range(max_examples))
    dl = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=s.collate)
    n, t0 = 0, time.perf_counter()
    for b in dl:
        n += len(b["y"])
    dt = time.perf_counter() - t0
    return {
        "examples": n,
        "examples_per_s": round(n / dt, 1),
        "tokens_per_s": round(n * task.max_len * (2 if task.dual else 1) / dt),
        "cache_build_s": round(build, 2),
        "max_len": task.max_len,
    }


def bench_loaders(d: Path, quick: bool) -> dict:
    import torch

    from surnn.harness.registry import TASKS

    torch.set_num_threads(1)  # as in a DataLoader worker; two threads thrash on a busy host

    rng = np.random.default_rng(0)
    n = 400 if quick else 2000
    write_imdb_like(d, n, rng)
    write_aan_like(d, n // 4, rng)
    write_cifar(d, n=n // 5)
    gen.generate(d, 32, "hard", n=n, seed=0, workers=2, fmt="cache", progress=False)
    imgs = rng.integers(0, 256, (n // 10, 128, 128), dtype=np.uint8)
    write_pathfinder_pngs(
        d, "pathfinder128/curv_contour_length_14", imgs, rng.integers(0, 2, n // 10), per_folder=100
    )
    cases = {
        "text": ("text", {"hub": False}),
        "retrieval": ("retrieval", {}),
        "image_tokens": ("image", {"hub": False, "val_size": n // 10}),
        "image_values": ("image", {"hub": False, "val_size": n // 10, "input": "values"}),
        "pathfinder32_tokens": ("pathfinder", {}),
        "pathfinder32_values": ("pathfinder", {"input": "values"}),
        "pathx_tokens": ("pathx", {"workers": 1}),
    }
    out = {}
    for key, (name, opts) in cases.items():
        out[key] = time_loader(TASKS.get(name)(data_dir=d, **opts))
        print(
            f"loader {key:22s} {out[key]['examples_per_s']:>10,.0f} examples/s  "
            f"{out[key]['tokens_per_s']:>12,} tokens/s"
        )
    return out


def bench_generators(d: Path, quick: bool) -> dict:
    out = {}
    runs = [
        (32, "hard", 1, "cache"),
        (32, "hard", 2, "cache"),
        (32, "hard", 2, "release"),
        (128, "hard", 2, "cache"),
    ]
    for res, diff, workers, fmt in runs:
        n = (200 if quick else 2000) // (8 if res == 128 else 1)
        load0 = os.getloadavg()[0]
        cpu0 = time.process_time() + _children_cpu()
        t0 = time.perf_counter()
        gen.generate(
            d / f"g{res}{workers}{fmt}",
            res,
            diff,
            n=n,
            seed=1,
            workers=workers,
            fmt=fmt,
            progress=False,
        )
        dt = time.perf_counter() - t0
        cpu = time.process_time() + _children_cpu() - cpu0
        key = f"pathfinder{res}_{diff}_{workers}proc_{fmt}"
        out[key] = {
            "images": n,
            "images_per_s": round(n / dt, 1),
            "seconds": round(dt, 2),
            "cpu_ms_per_image": round(1000 * cpu / n, 2),
            "images_per_s_if_cores_were_free": round(min(workers, os.cpu_count()) * n / cpu, 1),
            "load_avg_1min_before": load0,
        }
        print(
            f"generator {key:34s} {n / dt:8.1f} images/s wall, {1000 * cpu / n:5.2f} CPU ms/image "
            f"(load {load0:.1f})"
        )
    return out


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes (the generator's pool)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def figure(path: Path) -> None:
    """Generated samples with labels: two rows at 32 px, one row at 128 px (hard)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 6, figsize=(9, 5.2))
    for row, res in enumerate((32, 32, 128)):
        p = gen.params_for(res, "hard")
        for col in range(6):
            img, label, _ = gen.make_image(p, 7, row * 6 + col)
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{res}px  label {label} ({'same' if label else 'different'})", fontsize=7)
            ax.axis("off")
    fig.suptitle(
        "Generated Pathfinder (hard, contour length 14): label 1 = markers on one contour",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "data.json"))
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke check)")
    ap.add_argument("--figure", action="store_true", help="also write the samples figure")
    ap.add_argument("--skip-loaders", action="store_true")
    a = ap.parse_args(argv)
    if a.figure:
        figure(ROOT / "results" / "figures" / "pathfinder_samples.png")
    res = {
        "command": command_line(__file__, argv),
        "date": now_iso(),
        "git_commit": git_commit(ROOT, short=True),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": cpu_model(),
        },
        "load_avg_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        res["generators"] = bench_generators(Path(tmp), a.quick)
        if not a.skip_loaders:
            res["loaders"] = bench_loaders(Path(tmp) / "lra", a.quick)
    res["load_avg_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
