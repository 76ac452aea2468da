"""Evaluation metrics and the facts a run records about where and how it ran."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def git_commit(path: Path | None = None) -> str:
    """Commit of the code that ran, with ``-dirty`` when the tree has changes."""
    cwd = str(path or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """Peak memory and what it measures (CUDA allocator peak, or process peak RSS)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "process_max_rss"


def run_summary(timers: dict[str, float], step_times: list[float], device) -> dict[str, Any]:
    """Timings, throughput and peak memory of a run, for results.json: ``timers`` holds
    the seconds of training (``train_s``) and evaluation (``eval_s``) and the tokens
    trained on; ``step_times`` the seconds of each step."""
    out: dict[str, Any] = {
        "train_time_s": timers["train_s"],
        "eval_time_s": timers["eval_s"],
        "step_time_s": statistics.median(step_times) if step_times else None,
        "tokens_per_s": timers["tokens"] / timers["train_s"] if timers["train_s"] else None,
    }
    out["peak_memory_bytes"], out["peak_memory_kind"] = peak_memory_bytes(device)
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def multirun_job_command() -> str | None:
    """In a job of a Hydra multirun, the command of that one run: run.py with the job's own
    overrides (the sweep's command line names every job, and a submitit job's process is
    submitit's). None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    script = next((a for a in sys.argv if a.endswith("run.py")), "run.py")
    return shlex.join(["python", script, *HydraConfig.get().overrides.task])


def command_line() -> str:
    """The command that started the run (a multirun's job: its own, as if run alone). Under
    torchrun the workers see only ``run.py ...``: the launcher's own command line (the
    workers' parent) is recorded, so the run can be repeated as it was started."""
    job = multirun_job_command()
    if job is not None:
        return job
    own = " ".join(["python", *sys.argv])
    if "TORCHELASTIC_RUN_ID" not in os.environ and "LOCAL_WORLD_SIZE" not in os.environ:
        return own
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        parent = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except OSError:
        parent = []
    if any("torchrun" in a or "torch.distributed.run" in a for a in parent[:3]):
        exe = Path(parent[0]).name
        if exe.startswith("python"):
            parent[0] = "python"
        return " ".join(parent)
    nproc = os.environ.get("LOCAL_WORLD_SIZE", "?")
    return f"torchrun --nproc_per_node={nproc} " + " ".join(sys.argv)
