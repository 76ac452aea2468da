"""The pytest fixtures the tests share (plain helpers: tests/fixtures.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.fixtures import ToyTask, read_only, run_ranks


@pytest.fixture
def toy_task() -> ToyTask:
    """The tiny in-memory task: 96 / 30 / 31 sequences of 3-12 tokens, 3 classes."""
    return ToyTask()


@pytest.fixture
def ranks(tmp_path):
    """ranks(fn, world, *args): ``fn(rank, world, *args)`` on ``world`` processes joined by
    a gloo process group (DDP on CPU); what each returned, by rank."""

    def run(fn, world: int, *args) -> list:
        folder = tmp_path / f"ranks{len(list(tmp_path.glob('ranks*')))}"
        folder.mkdir()
        return run_ranks(fn, world, folder, *args)

    return run


@pytest.fixture
def frozen(monkeypatch):
    """freeze(folder): the folder read-only for the rest of the test (see read_only)."""
    roots, real_chmod = [], os.chmod

    def freeze(root: Path) -> None:
        roots.append(root)
        read_only(root, setattr=monkeypatch.setattr)

    yield freeze
    for root in roots:  # writable again, so pytest can remove it
        for p in [root, *root.rglob("*")]:
            real_chmod(p, p.stat().st_mode | stat.S_IWUSR)
