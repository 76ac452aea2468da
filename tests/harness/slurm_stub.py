"""SLURM on this machine, for the tests: ``sbatch``, ``srun``, ``squeue``, ``sacct``,
``scontrol`` and ``scancel`` as submitit calls them, running the submitted scripts here.

    slurm_stub.py install BIN_DIR      # writes the six commands into BIN_DIR

Each command is a two-line shell script that runs this file with the command's name (with
``python -S``: the standard library only, and no ``sitecustomize``). The state lives in
``$SLURM_STUB_DIR`` (one JSON file per job). What is emulated:

- ``sbatch SCRIPT``: reads the ``#SBATCH`` lines (``--array``, ``--nodes``,
  ``--ntasks-per-node``), prints ``Submitted batch job N`` and starts one detached runner
  that runs the array's tasks one after another (a cluster with one free slot) with the
  variables SLURM sets (``SLURM_JOB_ID``, ``SLURM_ARRAY_*``, ``SLURM_NTASKS``,
  ``SLURM_JOB_NUM_NODES``, ``SLURM_JOB_NODELIST``, ``SLURM_RESTART_COUNT`` after a requeue).
- ``srun [--output F] [--error F] CMD``: runs ``SLURM_NTASKS`` copies of CMD, each with its
  ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID``, output to F (``%A %a %j %t``
  replaced), and returns the worst exit status.
- ``scontrol requeue ID``: the job runs its script again once its tasks have ended.
- ``scancel ID [--signal SIG]``: sends SIG (default TERM) to every task of the job.
- ``sacct -j ID ... --parsable2`` and ``squeue``: the jobs' states.

Every node is this machine (``localhost``), so ``--nodes 2`` runs both nodes' tasks here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "srun", "squeue", "sacct", "scontrol", "scancel")


def state_dir() -> Path:
    d = Path(os.environ["SLURM_STUB_DIR"])
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read(path: Path) -> dict:
    for _ in range(50):  # a concurrent writer replaces the file atomically
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    return json.loads(path.read_text())


def _job_file(job_id: str) -> Path:
    return state_dir() / f"job-{job_id}.json"


def _set_state(job_id: str, **kw) -> None:
    path = _job_file(job_id)
    data = _read(path) if path.exists() else {}
    data.update(kw)
    _write(path, data)


# ------------------------------------------------------------------------------ sbatch


def _sbatch_options(script: Path) -> dict[str, str]:
    opts = {}
    for line in script.read_text().splitlines():
        m = re.match(r"#SBATCH\s+--([\w-]+)(?:=(.*))?$", line.strip())
        if m:
            opts[m.group(1)] = (m.group(2) or "").strip("'\"")
    return opts


def sbatch(args: list[str]) -> int:
    script = Path(args[-1]).resolve()
    opts = _sbatch_options(script)
    counter = state_dir() / "next_id"
    main_id = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(main_id + 1))
    array = opts.get("array")
    if array:
        lo, hi = array.split("%")[0].split("-")
        ids = [f"{main_id}_{i}" for i in range(int(lo), int(hi) + 1)]
    else:
        ids = [str(main_id)]
    for job in ids:
        _set_state(job, state="PENDING", restarts=0, pids=[])
    subprocess.Popen(
        [sys.executable, "-S", __file__, "_runner", str(script), json.dumps(opts), *ids],
        cwd=os.getcwd(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(state_dir() / f"runner-{main_id}.log", "a"),  # noqa: SIM115
        start_new_session=True,
    )
    print(f"Submitted batch job {main_id}")
    return 0


def _runner(args: list[str]) -> int:
    """Run each job of a submission (the array's tasks in order), again after a requeue."""
    script, opts, jobs = args[0], json.loads(args[1]), args[2:]
    nodes = int(opts.get("nodes") or 1)
    per_node = int(opts.get("ntasks-per-node") or 1)
    for job in jobs:
        main_id, _, index = job.partition("_")
        env = {
            **os.environ,
            "SLURM_JOB_ID": str(int(main_id) + (int(index) + 1 if index else 0) * 100000),
            "SLURM_JOB_NUM_NODES": str(nodes),
            "SLURM_NNODES": str(nodes),
            "SLURM_NTASKS": str(nodes * per_node),
            "SLURM_NTASKS_PER_NODE": str(per_node),
            "SLURM_JOB_NODELIST": ",".join(["localhost"] * nodes),
            "SLURM_STUB_JOB": job,
        }
        if index:
            env.update({"SLURM_ARRAY_JOB_ID": main_id, "SLURM_ARRAY_TASK_ID": index})
        restarts = 0
        while True:
            if restarts:
                env["SLURM_RESTART_COUNT"] = str(restarts)
            _set_state(job, state="RUNNING", restarts=restarts)
            rc = subprocess.call(["bash", script], env=env)
            flag = state_dir() / f"requeue-{job}"
            if flag.exists():
                flag.unlink()
                restarts += 1
                _set_state(job, state="REQUEUED", restarts=restarts)
                continue
            _set_state(job, state="COMPLETED" if rc == 0 else "FAILED", exit_code=rc)
            break
    return 0


# ------------------------------------------------------------------------------ srun


def _fill(pattern: str, task: int) -> str:
    job = os.environ.get("SLURM_STUB_JOB", os.environ.get("SLURM_JOB_ID", "0"))
    main_id, _, index = job.partition("_")
    out = pattern.replace("%A", main_id).replace("%a", index or "0")
    return out.replace("%j", job).replace("%t", str(task))


def srun(args: list[str]) -> int:
    files: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        flag = args[i]
        if flag in ("--output", "--error", "-o", "-e"):
            files["out" if flag in ("--output", "-o") else "err"] = args[i + 1]
            i += 2
            continue
        if flag.startswith(("--output=", "--error=")):
            key, _, value = flag.partition("=")
            files["out" if key == "--output" else "err"] = value
        i += 1
    cmd = args[i:]
    n = int(os.environ.get("SLURM_NTASKS", "1"))
    per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", str(n)))
    procs = []
    for task in range(n):
        env = {
            **os.environ,
            "SLURM_PROCID": str(task),
            "SLURM_LOCALID": str(task % per_node),
            "SLURM_NODEID": str(task // per_node),
            "SLURM_STEP_ID": "0",
        }
        out = open(_fill(files["out"], task), "a") if "out" in files else None  # noqa: SIM115
        err = open(_fill(files["err"], task), "a") if "err" in files else out  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err))
    job = os.environ.get("SLURM_STUB_JOB")
    if job:
        _set_state(job, pids=[p.pid for p in procs])
    codes = [p.wait() for p in procs]
    if job:
        _set_state(job, pids=[])
    bad = [c for c in codes if c != 0]
    return (bad[0] if bad[0] > 0 else 128 - bad[0]) if bad else 0


# ------------------------------------------------------------------------------ queries


def _jobs() -> dict[str, dict]:
    return {p.name[4:-5]: _read(p) for p in sorted(state_dir().glob("job-*.json"))}


def sacct(args: list[str]) -> int:
    wanted = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for job, data in _jobs().items():
        if not wanted or job.split("_")[0] in wanted or job in wanted:
            print(f"{job}|{data['state']}|localhost")
    return 0


def squeue(args: list[str]) -> int:
    print("JOBID|STATE")
    for job, data in _jobs().items():
        if data["state"] in ("PENDING", "RUNNING", "REQUEUED"):
            print(f"{job}|{data['state']}")
    return 0


def scontrol(args: list[str]) -> int:
    if len(args) >= 2 and args[0] == "requeue":
        for job in args[1].split(","):
            (state_dir() / f"requeue-{job}").touch()
        return 0
    print(f"scontrol stub: unsupported {' '.join(args)}", file=sys.stderr)
    return 1


def scancel(args: list[str]) -> int:
    sig = signal.SIGTERM
    jobs = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--signal":
            sig, i = signal.Signals["SIG" + args[i + 1].removeprefix("SIG")], i + 2
            continue
        if a.startswith("--signal="):
            sig = signal.Signals["SIG" + a.split("=", 1)[1].removeprefix("SIG")]
        elif not a.startswith("-"):
            jobs.append(a)
        i += 1
    for job, data in _jobs().items():
        if job in jobs or job.split("_")[0] in jobs:
            for pid in data.get("pids", []):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
    return 0


# ------------------------------------------------------------------------------ main


def install(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{__file__}" {name} "$@"\n')
        path.chmod(0o755)


def main(argv: list[str]) -> int:
    name, args = argv[0], argv[1:]
    if name == "install":
        install(Path(args[0]))
        return 0
    handlers = {
        "sbatch": sbatch,
        "srun": srun,
        "squeue": squeue,
        "sacct": sacct,
        "scontrol": scontrol,
        "scancel": scancel,
        "_runner": _runner,
    }
    return handlers[name](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
