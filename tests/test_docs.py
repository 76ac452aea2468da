"""The docs as a contract: every results folder says how its files were made, and no file
names a document the repository does not hold."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Not part of the repository: what a fresh clone lacks (the .gitignore's folders).
UNTRACKED = {".venv", "build", "data", "outputs", "multirun", "wandb", "logs", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".json", ".txt", ".cfg", ".ini"}


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


ISSUE_NUMBER = re.compile(r"\b[Ii]ssue #?[0-9]+")


def test_no_file_outside_results_points_to_an_issue_number():
    """Comments and docs say what the code does and why, not which issue asked for it: an
    issue tracker is not part of the repository. (results/ may date its evidence.)"""
    found = []
    for f in tracked_files():
        if f.parts[0] == "results" or (f.suffix not in TEXT_SUFFIXES and f.name != "Makefile"):
            continue
        text = (ROOT / f).read_text(errors="replace")
        found += [f"{f}: {m.group()}" for m in ISSUE_NUMBER.finditer(text)]
    assert not found, f"files naming an issue number: {found}"


# Documents that are not in the repository: a file naming them points a reader nowhere.
ABSENT_DOCS = ("LRA_DATA" + ".md", "DESIGN" + ".md", "PAPER" + ".md")


def test_no_file_names_a_document_the_repository_lacks():
    """Code, configs and docs outside results/ never name LRA_DATA, DESIGN or PAPER docs:
    what they held is stated where it is used (the README's data section, the task modules
    and presets, the scripts)."""
    files = tracked_files()
    added = [name for name in ABSENT_DOCS if (ROOT / name).exists()]
    assert not added, f"{added} is in the repository now: take it out of ABSENT_DOCS"
    found = []
    for f in files:
        if f.parts[0] == "results" or (f.suffix not in TEXT_SUFFIXES and f.name != "Makefile"):
            continue
        text = (ROOT / f).read_text(errors="replace")
        found += [f"{f}: {name}" for name in ABSENT_DOCS if name in text]
    assert not found, f"files naming a document not in the repository: {found}"
