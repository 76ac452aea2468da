"""Check an LRA data folder (and the pixel-level tasks' MNIST / CIFAR-10), optionally
build the caches, print one table.

    python scripts/prepare_data.py [--data-dir DIR] [--build-cache] [--tasks text image ...]

For every task: whether its files are found (the LRA release / local copies), generated
(by our seeded generators) or missing; file, row and image counts against the release;
size on disk; and for missing data the exact command or source to get it. With
``--build-cache`` the tasks with data build their memory-mapped caches (options from
configs/task/<task>.yaml). Exits 0 unless found data is malformed (then 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import sys
from pathlib import Path

from surnn.harness import registry
from tasks.generators import pathfinder as pfgen
from tasks.retrieval import EXPECTED_ROWS, tsv_path

ROOT = Path(__file__).resolve().parents[1]

RELEASE_IMAGES = 200_000  # per Pathfinder difficulty
LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def count_lines(path: Path) -> int:
    """Rows of a text file, streamed in 16 MB blocks (AAN train is large)."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def counts_note(got: dict[str, int], expected: dict[str, int]) -> str:
    txt = " / ".join(f"{k} {v:,}" for k, v in got.items())
    return (
        txt
        if got == expected
        else txt + " (release: " + " / ".join(f"{v:,}" for v in expected.values()) + ")"
    )


# ----------------------------------------------------------------------------- checks
# each returns (status, size in bytes, detail, how to get it)


def check_listops(d: Path):
    folder = d / "listops-1000"
    files = {s: folder / f"basic_{s}.tsv" for s in ("train", "val", "test")}
    cmd = (
        f"generated on first run (configs/task/listops.yaml generate), or "
        f"python -m tasks.generators.listops --out {d}; release: {LRA_URL}"
    )
    if not all(f.is_file() for f in files.values()):
        return "missing", 0, "no listops-1000/basic_{train,val,test}.tsv", cmd
    got = {s: count_lines(f) - 1 for s, f in files.items()}
    gen = (folder / "GENERATED.json").exists()  # marker of tasks.generators.listops
    return (
        "generated" if gen else "found",
        du(folder),
        counts_note(got, {"train": 96_000, "val": 2_000, "test": 2_000}),
        "",
    )


def check_text(d: Path):
    acl = d / "aclImdb"
    hub = d / "hub" / "stanfordnlp" / "imdb"
    how = (
        f"unpack https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz into {d}, or "
        "python -c \"import datasets; datasets.load_dataset('stanfordnlp/imdb')"
        f".save_to_disk('{hub}')\""
    )
    if acl.is_dir():
        got = {}
        for s in ("train", "test"):
            got[s] = sum(len(list((acl / s / c).glob("*.txt"))) for c in ("neg", "pos"))
        return (
            "found",
            du(acl),
            "aclImdb " + counts_note(got, {"train": 25_000, "test": 25_000}),
            "",
        )
    if hub.is_dir():
        return "found", du(hub), f"datasets save_to_disk folder {hub}", ""
    return "missing", 0, "no aclImdb/ or hub/stanfordnlp/imdb (the hub is tried at run time)", how


def check_retrieval(d: Path):
    paths = {s: tsv_path(d, s) for s in EXPECTED_ROWS}
    if not all(p.is_file() for p in paths.values()):
        missing = [p.name for p in paths.values() if not p.is_file()]
        return (
            "missing",
            0,
            "no " + ", ".join(missing),
            f"unpack {LRA_URL}; data_dir = lra_release/",
        )
    got = {s: count_lines(p) for s, p in paths.items()}
    return "found", sum(du(p) for p in paths.values()), counts_note(got, EXPECTED_ROWS), ""


def check_image(d: Path):
    root = d / "cifar-10-batches-py"
    hub = d / "hub" / "uoft-cs" / "cifar10"
    how = (
        f"unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into {d}, or "
        "python -c \"import datasets; datasets.load_dataset('uoft-cs/cifar10')"
        f".save_to_disk('{hub}')\""
    )
    if root.is_dir():
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            return "error", du(root), f"cifar-10-batches-py lacks {', '.join(missing)}", how
        n = {}
        for name in names:
            with open(root / name, "rb") as f:
                n[name] = len(pickle.load(f, encoding="bytes")[b"labels"])
        got = {"train": sum(n[k] for k in names[:5]), "test": n["test_batch"]}
        return "found", du(root), counts_note(got, {"train": 50_000, "test": 10_000}), ""
    if hub.is_dir():
        return "found", du(hub), f"datasets save_to_disk folder {hub}", ""
    return "missing", 0, "no cifar-10-batches-py/ or hub/uoft-cs/cifar10", how


def check_pathfinder(d: Path, resolution: int = 32, difficulty: str = "hard"):
    root = d / pfgen.folder_name(resolution, difficulty)
    cmd = (
        f"python -m tasks.generators.pathfinder --resolution {resolution} --difficulty "
        f"{difficulty} --n 200000 --out {d} --format cache   (or the release: {LRA_URL})"
    )
    generated = (root / "generated.json").is_file()
    status = "generated" if generated else "found"
    if (root / "metadata").is_dir():
        lines = sum(count_lines(f) for f in (root / "metadata").glob("*.npy"))
        pngs = (
            sum(
                sum(1 for e in os.scandir(sub) if e.name.endswith(".png"))
                for sub in (root / "imgs").iterdir()
                if sub.is_dir()
            )
            if (root / "imgs").is_dir()
            else 0
        )
        detail = f"{lines:,} metadata lines, {pngs:,} PNGs"
        if lines != pngs:
            detail += " (counts differ)"
        if lines != RELEASE_IMAGES:
            detail += f" (release: {RELEASE_IMAGES:,})"
        return status, du(root), detail, ""
    if (root / "images.npy").is_file():
        import numpy as np

        shape = np.load(root / "images.npy", mmap_mode="r").shape
        info = json.loads((root / "generated.json").read_text()) if generated else {}
        detail = (
            f"{shape[0]:,} images of {resolution}x{resolution} (arrays, seed {info.get('seed')})"
        )
        return status, du(root), detail, ""
    return "missing", 0, f"no {pfgen.folder_name(resolution, difficulty)}/", cmd


def check_mnist(d: Path):
    from tasks.pixel import MNIST_URL, mnist_files, read_idx

    hub = d / "hub" / "ylecun" / "mnist"
    how = (
        f'put the four IDX files ({MNIST_URL}) in {d / "mnist"}, or python -c "import '
        f"datasets; datasets.load_dataset('ylecun/mnist').save_to_disk('{hub}')\""
    )
    files = mnist_files(d)  # a folder with some files missing raises: an error row
    if files is not None:
        root, found = files
        got = {s: len(read_idx(found[f"{s}_y"], 1)) for s in ("train", "test")}
        return "found", du(root), counts_note(got, {"train": 60_000, "test": 10_000}), ""
    if hub.is_dir():
        return "found", du(hub), f"datasets save_to_disk folder {hub}", ""
    return "missing", 0, "no mnist/ (IDX files) or hub/ylecun/mnist", how


CHECKS = {
    "listops": check_listops,
    "text": check_text,
    "retrieval": check_retrieval,
    "image": check_image,
    "pathfinder": lambda d: check_pathfinder(d, 32, "hard"),
    "pathx": lambda d: check_pathfinder(d, 128, "hard"),
    "smnist": check_mnist,
    "psmnist": check_mnist,
    "scifar": check_image,
}
# The tasks with data to check: the registry's (task=), in its order, that have a check.
TASKS = tuple(t for t in registry.TASKS if t in CHECKS)


def build_cache(task: str, d: Path) -> str:
    """Build a task's cache with the options of configs/task/<task>.yaml."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / "task" / f"{task}.yaml")
    opts = OmegaConf.to_container(cfg.get("options") or {}, resolve=True)
    if task in ("pathfinder", "pathx"):
        opts["generate"] = False  # only cache what is there
    t = registry.TASKS.get(task)(data_dir=d, **opts)
    s = t.splits()
    path = getattr(t, "cache_path", None)
    return f"cache {len(s.train):,}/{len(s.val):,}/{len(s.test):,}" + (
        f" at {path}" if path else ""
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("LRA_DATA", "./data"))
    ap.add_argument("--build-cache", action="store_true", help="build the caches of found data")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    d = Path(a.data_dir).expanduser().resolve()
    rows, bad = [], 0
    for task in a.tasks:
        try:
            status, size, detail, how = CHECKS[task](d)
        except Exception as e:  # noqa: BLE001 - report any unreadable folder in the table
            status, size, detail, how = "error", 0, f"{type(e).__name__}: {e}", ""
        if a.build_cache and status in ("found", "generated"):
            try:
                detail += "; " + build_cache(task, d)
            except Exception as e:  # noqa: BLE001 - HarnessError or a broken file
                status, how = "error", f"{type(e).__name__}: {e}"
        bad += status == "error"
        rows.append((task, status, human(size) if size else "-", detail, how))
    print(f"LRA data in {d}" + ("" if d.is_dir() else " (folder does not exist)"))
    head = ("task", "status", "size", "contents", "how to get it")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths), "-" * 13))
    for r in rows:
        print(fmt.format(*r))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
