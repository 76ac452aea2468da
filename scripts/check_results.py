#!/usr/bin/env python
"""Rerun committed results and compare: do the numbers in results/ still come out of
today's code?

    python scripts/check_results.py                      # every run in results/demo/
    python scripts/check_results.py results/demo/surnn.json results/ablations/rhythm_groups
    python scripts/check_results.py outputs/sweeps/<date>/<job>/results.json   # one sweep job
    python scripts/check_results.py --update             # rerun and rewrite the committed files
    make check-results                                   # the same (not part of the CI suite)

Each committed ``<name>.json`` is a run's results.json: it names the command that made it
(``command``; a sweep job records the command that reruns that job alone), the commit
(``git_commit``) and the CPU threads it ran with (``threads``, or the count in ``device``).
The command is rerun here with the same thread count (OMP_NUM_THREADS / MKL_NUM_THREADS,
PYTHONHASHSEED=0) and launcher (``torchrun --nproc_per_node=N``: N processes again) into a
fresh output folder, and every outcome field (accuracies, losses, best step, update rates,
FLOPs, sizes) must be equal: training on CPU is deterministic for a given commit, seed,
thread count, number of processes and CPU instruction set (AVX2 and AVX-512 machines round
some sums differently; over a training the difference can reach the accuracies, so compare
on the kind of CPU a result was made on: its ``device``, and the README of its folder). Timings and dates are reported, never compared. The
rerun uses the CPU kernel the result records (``kernel``; none recorded: the eager ``cpu``
path, which a result that records no kernel ran on);
``--update`` reruns with today's defaults and writes every rerun over its committed file
after the last rerun (so no rerun runs on a tree the update has already modified; the
files whose rerun failed are named and left as they are, exit status 1), each recording
its rerun's commit: a ``-dirty`` one, from uncommitted changes, is warned about file by
file. Of the rerun's ``data`` a committed file keeps the portable part (whether the data was
generated, the generator settings, the task's sizes and options), none of its machine-local
paths. The end says, per folder, how many results reproduce and which do not. Exit status 0
when all match, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from surnn.harness.results import RunResult
from surnn.harness.run_setting import committed_data

ROOT = Path(__file__).resolve().parents[1]
COMPARED = (  # RunResult fields (test_acc: test_metric when the metric is accuracy)
    "steps",
    "best_val_metric",
    "best_val_acc",
    "best_val_loss",
    "best_step",
    "test_acc",
    "test_loss",
    "test_examples",
    "test_majority_class",
    "test_metrics",
    "update_rate",
    "active_rate",
    "params",
    "split_sizes",
    "flops_per_seq",
    "flops_per_seq_dense",
    "precision",
)


def threads_of(res: RunResult) -> int | None:
    if isinstance(res.threads, int):
        return res.threads
    m = re.search(r"(\d+) threads", str(res.device or ""))
    return int(m.group(1)) if m else None


def run_args(res: RunResult) -> list[str]:
    """The run.py overrides of the command that made a result."""
    words = shlex.split(str(res.command or ""))
    for i, w in enumerate(words):
        if w.endswith("run.py"):
            return words[i + 1 :]
    raise ValueError(f"command {res.command!r} does not run run.py")


def launcher(res: RunResult) -> list[str]:
    """How the result's command started run.py: ``python``, or torchrun with its process
    count (rerun as ``python -m torch.distributed.run --standalone --nproc_per_node=N``:
    a free port, the same number of processes)."""
    words = shlex.split(str(res.command or ""))
    head = words[: next((i for i, w in enumerate(words) if w.endswith("run.py")), 0)]
    if not any("torchrun" in w or "torch.distributed.run" in w for w in head):
        return [sys.executable]
    nproc = next((w.split("=", 1)[1] for w in head if w.startswith("--nproc_per_node=")), "1")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
    ]


def find(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                res = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if (
                isinstance(res, dict)
                and "command" in res
                and ("test_acc" in res or "metric_name" in res)
            ):
                out.append(f)
    return out


def compare(old: RunResult, new: RunResult) -> list[tuple[str, object, object]]:
    """The compared fields the committed file holds that differ: (field, committed, rerun)."""
    return [
        (k, getattr(old, k), getattr(new, k))
        for k in COMPARED
        if old.has(k) and getattr(old, k) != getattr(new, k)
    ]


def rerun_env(res: RunResult, pin_kernel: bool = True) -> dict[str, str]:
    """The environment a result is rerun in: its thread count, a fixed hash seed and, with
    ``pin_kernel``, the CPU kernel ``impl=auto`` ran for it (``kernel``; a result without
    one is from a commit whose auto runs the eager path on CPU). Without it: this tree's auto."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("SURNN_AUTO_COMPILED", None)
    kernel = res.kernel if res.has("kernel") else "cpu"
    if pin_kernel and kernel in ("cpu", "compiled"):
        env["SURNN_AUTO_COMPILED"] = "0" if kernel == "cpu" else "1"
    threads = threads_of(res)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def rerun_args(res: RunResult, out_dir: Path, data_dir: str | None) -> list[str]:
    """The run.py overrides of a rerun: the recorded ones, the run folder under ``out_dir``
    (a recorded ``hydra.run.dir`` would put the run back where it first ran) and
    ``data_dir`` when given."""
    drop = ("output_dir=", "hydra.run.dir=") + (("data_dir=",) if data_dir else ())
    args = [a for a in run_args(res) if not a.startswith(drop)]
    extra = [f"output_dir={out_dir}"] + ([f"data_dir={data_dir}"] if data_dir else [])
    return [*args, *extra, "trainer.progress=false"]


def rerun_folder(runs_dir: Path, i: int, name: str) -> Path:
    """The folder of the i-th rerun: its result file's name with every character Hydra's
    override grammar would read (``=``, ``,``, brackets, quotes, spaces) made ``_``, so
    ``output_dir=<folder>`` stays one value (``surrogate=ste-s0.json`` -> ``0-surrogate_ste-s0``)."""
    return runs_dir / f"{i}-{re.sub(r'[^A-Za-z0-9._+-]', '_', name)}"


def rerun(
    res: RunResult, out_dir: Path, data_dir: str | None, pin_kernel: bool = True
) -> RunResult:
    env = rerun_env(res, pin_kernel)
    threads = threads_of(res)
    cmd = [*launcher(res), str(ROOT / "run.py"), *rerun_args(res, out_dir, data_dir)]
    print(f"  rerun: {' '.join(cmd[1:])}  (threads={threads or 'default'})", flush=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the rerun failed (exit {p.returncode}):\n{tail}")
    found = sorted(out_dir.rglob("results.json"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise RuntimeError(f"the rerun wrote no results.json under {out_dir}")
    return RunResult.load(found[-1])


def write_updates(updates: list[tuple[Path, RunResult, int]], failed: list[Path]) -> int:
    """``--update``'s writes, all after the last rerun: a committed file written right after
    its rerun would leave the tree modified, so every later rerun of the same call (from
    the repository it rewrites) would record a ``-dirty`` commit. ``updates``: (file, the
    rerun's result, fields changed); ``failed``: the files whose rerun failed, left as they
    are. Each written file records its rerun's ``git_commit``; one naming a ``-dirty`` tree
    gets a warning line of its own. Returns the exit status: 1 when a rerun failed."""
    for f, res, n_changed in updates:
        res.save(f)
        print(f"updated {f} ({n_changed} field(s) changed; rerun at {res.git_commit})")
    for f, res, _ in updates:
        if str(res.git_commit).endswith("-dirty"):
            print(
                f"WARNING: {f} records {res.git_commit}: rerun from a tree with uncommitted "
                "changes, not evidence; commit them and rerun it"
            )
    if failed:
        print(f"NOT updated, rerun failed ({len(failed)}): {', '.join(map(str, failed))}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("paths", nargs="*", type=Path, default=[ROOT / "results" / "demo"])
    ap.add_argument("--runs-dir", type=Path, help="where the reruns go (default: a temp folder)")
    ap.add_argument("--data-dir", help="data_dir for the reruns (default: the config's)")
    ap.add_argument("--update", action="store_true", help="write the reruns over the files")
    args = ap.parse_args(argv)

    files = find(args.paths)
    if not files:
        print(
            f"error: no committed results under {', '.join(map(str, args.paths))}", file=sys.stderr
        )
        return 2
    from surnn.provenance import git_commit

    head = git_commit()
    if args.update and head.endswith("-dirty"):
        print(
            f"WARNING: this tree has uncommitted changes ({head}): the updated "
            "files will record a -dirty commit, which is not evidence; commit and rerun"
        )
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="check_results-"))
    bad = 0
    updates: list[tuple[Path, RunResult, int]] = []  # --update: written after the last rerun
    failed: list[Path] = []
    outcome: dict[Path, dict[str, list[str]]] = {}  # folder -> {"same": [...], "not": [...]}
    for i, f in enumerate(files):
        per = outcome.setdefault(f.parent, {"same": [], "not": []})
        old = RunResult.load(f)
        print(f"[{i + 1}/{len(files)}] {f} (made at {str(old.git_commit)[:12]}, now {head[:12]})")
        try:
            new = rerun(old, rerun_folder(runs_dir, i, f.stem), args.data_dir, not args.update)
        except (RuntimeError, ValueError) as e:
            print(f"  FAILED: {e}")
            bad += 1
            failed.append(f)
            per["not"].append(f"{f.name} (rerun failed)")
            continue
        diff = compare(old, new)
        if args.update:
            # the reruns' output_dir/data_dir change nothing: the committed command stays;
            # of ``data`` only its portable part (no machine-local paths)
            keep = dataclasses.replace(new, command=old.command, data=committed_data(new.data))
            updates.append((f, keep, len(diff)))
            print(f"  rerun done ({len(diff)} field(s) changed; written after the last rerun)")
            continue
        metric = new.metric_name or "acc"
        if diff:
            bad += 1
            print("  DIFFERENT:")
            for k, a, b in diff:
                print(f"    {k}: committed {a} / rerun {b}")
            test = f"test_{metric} {old.test_metric} -> {new.test_metric}"
            per["not"].append(f"{f.name} ({test})")
        else:
            best = new.best_val_metric if new.has("best_val_metric") else new.best_val_acc
            print(f"  same: test_{metric} {new.test_metric:.4f}, best validation {best:.4f}")
            per["same"].append(f.name)
    if args.update:
        return write_updates(updates, failed)
    for folder, per in outcome.items():
        n = len(per["same"]) + len(per["not"])
        status = "reproduces" if not per["not"] else "does NOT reproduce"
        line = f"{folder}: {status} ({len(per['same'])} of {n} result(s) the same"
        print(line + (f"; different: {', '.join(per['not'])})" if per["not"] else ")"))
    print(f"{len(files) - bad} of {len(files)} result(s) reproduced")
    if bad:
        import torch

        from surnn.provenance import cpu_model

        isa = torch.backends.cpu.get_cpu_capability()
        print(
            f"(this CPU: {cpu_model()}, {isa}. A result made on another instruction set can "
            "differ here without a change of code: rerun it where it was made, as its "
            "folder's README says)"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
