"""The docs as a contract: every results folder says how its files were made."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Not part of the repository: what a fresh clone lacks (the .gitignore's folders).
UNTRACKED = {".venv", "build", "data", "outputs", "multirun", "wandb", "logs", "__pycache__"}


def tracked_files() -> list[Path]:
    """The repository's files, relative to its root: git's list, or (outside a git checkout)
    every file but the ignored folders and hidden ones."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
        return [Path(p) for p in out.decode().split("\0") if p and (ROOT / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [
            p.relative_to(ROOT)
            for p in ROOT.rglob("*")
            if p.is_file()
            and not any(
                part in UNTRACKED or part.startswith(".") for part in p.relative_to(ROOT).parts
            )
        ]


def results_folders(files: list[Path]) -> set[Path]:
    """results/ and every folder under it that holds a file, with the folders between."""
    out = set()
    for f in files:
        if f.parts[0] != "results":
            continue
        for i in range(1, len(f.parts)):
            out.add(Path(*f.parts[:i]))
    return out


def test_every_results_folder_has_a_readme():
    """Each folder of results/ has a README.md naming the command that made each file; a
    runs/ folder (a study's per-run results.json and metrics logs) is described by the
    README of the folder above it, which names it."""
    files = tracked_files()
    folders = results_folders(files)
    assert Path("results") in folders
    missing, unnamed = [], []
    for d in sorted(folders):
        if "runs" in d.parts:
            top = Path(*d.parts[: d.parts.index("runs")])
            readme = ROOT / top / "README.md"
            if readme.is_file() and "runs/" not in readme.read_text():
                unnamed.append(str(top / "README.md"))
            continue
        if not (ROOT / d / "README.md").is_file():
            missing.append(str(d))
    assert not missing, f"results folders without a README.md: {missing}"
    assert not unnamed, f"READMEs that do not describe their runs/ folder: {sorted(set(unnamed))}"
