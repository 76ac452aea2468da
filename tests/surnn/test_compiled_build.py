"""The compiled CPU kernel's build and load (surnn/ops/compiled_build.py): a built kernel
loads in any process, concurrent builds of one key build once, a failed build leaves
nothing behind, the key follows sources and flags only, a layer loads the kernel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import surnn.ops as ops
from surnn.ops import compiled, compiled_build
from tests.fixtures import ROOT

needs_kernel = pytest.mark.skipif(
    not compiled.available(), reason=f"compiled kernel unavailable: {compiled._STATE['error']}"
)


def _load_in_subprocess(path_dirs: list[str]) -> dict:
    """compiled.load() in a fresh process whose PATH is ``path_dirs``: its state."""
    code = (
        "import json\n"
        "from surnn.ops import compiled\n"
        "ext = compiled.load()\n"
        "print(json.dumps({'file': str(compiled._STATE['library']), 'loaded': ext is not None,"
        " 'built': compiled._STATE['built'], 'error': compiled._STATE['error']}))\n"
    )
    env = {**os.environ, "PATH": os.pathsep.join(path_dirs)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@needs_kernel
def test_a_built_kernel_loads_whatever_ninja_or_path_the_process_has(tmp_path, monkeypatch):
    """The library is keyed by its sources, flags, torch, Python and compiler: with the
    venv's ninja first on PATH (an activated shell), the system's (the venv's python run
    by path, as SLURM jobs do) or no ninja at all, load() finds the library this process
    loaded and builds nothing; so does a fresh process."""
    so = compiled._STATE["library"]
    before = so.stat().st_mtime_ns
    only_cxx = tmp_path / "bin"  # a PATH with the compiler and no ninja
    only_cxx.mkdir()
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    (only_cxx / Path(cxx).name).symlink_to(cxx)
    system = ["/usr/local/bin", "/usr/bin", "/bin"]
    for path in ([str(Path(sys.executable).parent), *system], system, [str(only_cxx)]):
        monkeypatch.setenv("PATH", os.pathsep.join(path))
        for key, value in {"tried": False, "ext": None, "error": None, "library": None}.items():
            monkeypatch.setitem(compiled._STATE, key, value)
        assert compiled.load() is not None, (path, compiled._STATE["error"])
        assert compiled._STATE["library"] == so and compiled._STATE["built"] is False, path
    monkeypatch.undo()
    got = _load_in_subprocess(system)
    assert got == {"file": str(so), "loaded": True, "built": False, "error": None}
    assert so.stat().st_mtime_ns == before


def test_concurrent_builds_of_one_key_build_once(tmp_path):
    """Processes (here threads, each with its own lock file handle) that find no library
    for their key build one at a time: the first builds, the others wait and load what it
    built; nothing of the build folder is left beside the library."""
    calls = []

    def build(folder: Path):
        calls.append(folder)
        time.sleep(0.2)  # a build takes a while: the others arrive during it
        (folder / "fake.so").write_bytes(b"library")
        return None

    where = tmp_path / "fake-0123"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: compiled_build.library(where, "fake", build), range(4)))
    assert len(calls) == 1
    assert [r[2] for r in results].count(True) == 1
    assert all(r[0] == where / "fake.so" for r in results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-0123", "fake-0123.lock"]
    assert compiled_build.library(where, "fake", build)[2] is False and len(calls) == 1


def test_a_failed_build_leaves_nothing_and_the_next_process_builds(tmp_path):
    def broken(folder: Path):
        (folder / "half.o").write_bytes(b"")
        raise RuntimeError("compiler error")

    where = tmp_path / "fake-0123"
    with pytest.raises(RuntimeError, match="compiler error"):
        compiled_build.library(where, "fake", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-0123.lock"]

    def works(folder: Path):
        (folder / "fake.so").write_bytes(b"library")

    assert compiled_build.library(where, "fake", works) == (where / "fake.so", None, True)


def test_the_key_follows_sources_and_flags_only():
    key = compiled_build.build_key("surnn_su_gru", ["-O3"], ["-fopenmp"], "c++")
    assert key == compiled_build.build_key("surnn_su_gru", ["-O3"], ["-fopenmp"], "c++")
    assert key != compiled_build.build_key("surnn_su_gru", ["-O2"], ["-fopenmp"], "c++")
    assert key != compiled_build.build_key("surnn_su_gru_san", ["-O3"], ["-fopenmp"], "c++")


@needs_kernel
def test_a_layer_loads_the_kernel_when_made(monkeypatch):
    """A SelectiveUpdateGRU that may run the compiled kernel loads it (building it once)
    when it is made, so that no forward, such as a trainer's first timed step, pays for
    the build."""
    from surnn.layer import SelectiveUpdateGRU

    monkeypatch.setattr(ops, "AUTO_COMPILED", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for impl, loads in [("cpu", False), ("auto", True), ("compiled", True)]:
        for key, value in {"tried": False, "ext": None, "error": None}.items():
            monkeypatch.setitem(compiled._STATE, key, value)
        SelectiveUpdateGRU(3, 4, impl=impl)
        assert compiled._STATE["tried"] is loads, impl
        assert (compiled._STATE["ext"] is not None) is loads, impl


# ------------------------------------------------------------------ fake implementations
