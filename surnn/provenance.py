"""Where and how a result was made, as every results.json, benchmark JSON and generated table
records it: the commit of the code (``-dirty`` when tracked files have uncommitted changes),
the device, the command line as typed, the date. It is part of the method (it imports nothing
of the harness), so the method's benchmarks (``surnn.ops.bench``, ``surnn.ops.triton.aot``)
record the same facts as the harness; ``import surnn`` does not load it."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

#: the repository this checkout of the package lives in
ROOT = Path(__file__).resolve().parents[1]


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_commit(root: Path | None = None, short: bool = False) -> str:
    """The commit checked out at ``root`` (default: this repository), the full hash or with
    ``short`` the abbreviated one, with ``-dirty`` when tracked files have uncommitted
    changes; ``unknown`` outside a git checkout."""
    cwd = Path(root or ROOT)
    try:
        sha = _git(["rev-parse", *(["--short"] if short else []), "HEAD"], cwd)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str, threads: bool = False) -> str:
    """A CUDA device's name, or the CPU's model; with ``threads`` a CPU is
    ``cpu (<model>, <n> threads)``, the torch threads a run computes with."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if threads:
        return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    return cpu_model()


def command_line(script: str | Path | None = None, args: Sequence[str] | None = None) -> str:
    """The command that started this process (``python <script> <args>``, or ``python -m
    <module> <args>`` when a module was run), each word quoted where a shell needs it, so
    that it runs again as it is (and ``shlex.split`` reads it back). Under torchrun the
    workers see only ``<script> <args>``: the launcher's own command line (the workers'
    parent) is recorded, so the run can be repeated as it was started. A script given by an
    absolute path below the working folder is written relative to it (``python
    /clone/run.py`` typed in /clone: ``python run.py``), as a sweep job's command names
    run.py: the command names no machine's folders it need not.

    A script whose ``main(argv)`` is called with its arguments (by a test or another script,
    not from a command line) passes its file and those arguments: the command is then
    ``python <script> <args>``, the one that runs it alone; with ``args`` None it is the
    command line of this process."""
    if args is not None:
        return shlex.join(["python", *_relative([str(script or sys.argv[0]), *args])])
    own = shlex.join(["python", *_relative(_typed_argv())])
    if "TORCHELASTIC_RUN_ID" not in os.environ and "LOCAL_WORLD_SIZE" not in os.environ:
        return own
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        parent = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except OSError:
        parent = []
    if any("torchrun" in a or "torch.distributed.run" in a for a in parent[:3]):
        if Path(parent[0]).name.startswith("python"):
            parent[0] = "python"
        return shlex.join(parent)
    nproc = os.environ.get("LOCAL_WORLD_SIZE", "?")
    return f"torchrun --nproc_per_node={nproc} " + shlex.join(_relative(list(sys.argv)))


def _typed_argv() -> list[str]:
    """``sys.argv``, with ``-m <module>`` in place of the module's file when the interpreter
    ran a module (``python -m pkg.mod``: ``sys.argv[0]`` is pkg/mod.py)."""
    argv = list(sys.argv)
    orig = list(getattr(sys, "orig_argv", []))
    k = len(orig) - len(argv)  # orig[k + 1:] are argv[1:] when orig ends with them
    if k >= 2 and orig[k - 1] == "-m" and orig[k + 1 :] == argv[1:]:
        argv[0:1] = ["-m", orig[k]]
    return argv


def _relative(argv: list[str]) -> list[str]:
    """``argv`` with its script, given by an absolute path below the working folder, written
    relative to that folder; else as it is."""
    script = Path(argv[0]).resolve() if argv and os.path.isabs(argv[0]) else None
    if script is not None and script.is_relative_to(Path.cwd()):
        argv = [os.path.relpath(script, Path.cwd()), *argv[1:]]
    return argv


def now_iso() -> str:
    """The time now, UTC, to the second (ISO 8601)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
