"""The pytest fixtures of the harness tests (those of every test: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    """One folder for a module's run.py processes (tests.fixtures.run_in_tmp): their data in
    ``data/`` (generated once, then cached), their run folders in ``out/``."""
    return tmp_path_factory.mktemp("cli")
