"""The setting a finished run was in, read from its run folder (results.json, config.yaml).

A run in its task's standard setting (full data, every test example) may sit beside
published numbers; any other run (the demo's short ListOps, a smoke run, a CPU-sized preset
such as ``memory/copy_memory_cpu``, a test scored on part of the test set, data of another
size) carries a label saying what differs. Used by
``scripts/make_tables.py`` (tables by setting) and ``scripts/bench_checkpoint.py`` (the
setting of a benchmarked checkpoint).
"""

from __future__ import annotations

from pathlib import Path

from surnn.harness.results import RunResult

STANDARD_SPLITS = {  # (train, val, test) of each task's standard data
    "listops": (96000, 2000, 2000),
    "text": (25000, 25000, 25000),
    "retrieval": (147086, 18090, 17437),
    "image": (45000, 5000, 10000),
    "pathfinder": (160000, 20000, 20000),
    "pathx": (160000, 20000, 20000),
    "smnist": (55000, 5000, 10000),
    "psmnist": (55000, 5000, 10000),
    "scifar": (45000, 5000, 10000),
}
LRA_LISTOPS = {"min_length": 500, "max_length": 2000, "max_depth": 10}


def run_config(run_dir: str | Path | None) -> dict:
    """The run's resolved config.yaml as plain data ({} when absent or unreadable)."""
    p = Path(run_dir or ".") / "config.yaml"
    if run_dir is None or not p.exists():
        return {}
    import yaml

    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError:
        return {}


def setting_of(r: RunResult, run_dir: str | Path | None = None) -> str | None:
    """None for a run (its results.json ``r``) in its task's standard setting, else a label
    saying what differs (such runs never sit unmarked beside published numbers): the
    file's own ``setting`` key when it has one. ``run_dir`` (default: the folder ``r`` was
    loaded from) is where its config.yaml is read from."""
    if r.extra.get("setting"):
        return str(r.extra["setting"])
    marks = []
    cfg = run_config(run_dir if run_dir is not None else r.run_dir)
    cmd = r.command or ""
    if (cfg.get("trainer") or {}).get("name") == "smoke" or "trainer=smoke" in cmd:
        marks.append("smoke")
    if "experiment=demo_" in cmd:
        marks.append("demo (" + cmd.split("experiment=")[1].split()[0] + ")")
    exp = experiment_of(r) or ""
    cpu_sized = exp.endswith("_cpu") or exp.startswith(("memory/copy/", "memory/selective/"))
    if cpu_sized:  # memory/copy_memory_cpu, the memory study's arms: sized for a CPU
        marks.append(f"CPU-sized preset ({exp})")
    sizes = r.split_sizes or {}
    n_test, full = r.test_examples, sizes.get("test")
    if n_test is not None and full and n_test < full:
        marks.append(f"test scored on {n_test} of {full} examples")
    std = STANDARD_SPLITS.get(r.task)
    if std and sizes and tuple(sizes.get(k) for k in ("train", "val", "test")) != std:
        marks.append("data of another size ({train}/{val}/{test})".format(**sizes))
    gen = (r.data or {}).get("generate")
    lra_like = isinstance(gen, dict) and all(gen.get(k, v) == v for k, v in LRA_LISTOPS.items())
    if r.task == "listops" and isinstance(gen, dict) and not lra_like:
        marks.append(
            f"ListOps generated with lengths {gen.get('min_length')}-"
            f"{gen.get('max_length')}, depth <= {gen.get('max_depth')}"
        )
    return "; ".join(marks) or None


def generated_data(r: RunResult) -> bool:
    """The run read data this harness generated (ListOps, Pathfinder), not a release."""
    src = str((r.data or {}).get("source") or "")
    return src.startswith("generated")


def experiment_of(r: RunResult) -> str | None:
    """The preset the run was started with (``experiment=...`` on its command line)."""
    cmd = r.command or ""
    return cmd.split("experiment=")[1].split()[0] if "experiment=" in cmd else None


def scale_of(r: RunResult, run_dir: str | Path | None = None) -> str:
    """One word for the run's size: smoke, demo, mini (the mini presets), full (the
    standard setting) or other (any other non-standard setting)."""
    exp = experiment_of(r) or ""
    sett = setting_of(r, run_dir)
    if sett and "smoke" in sett.split("; "):
        return "smoke"
    if exp.startswith("demo_"):
        return "demo"
    if exp.startswith("mini/") or (sett or "").startswith("mini"):
        return "mini"
    return "full" if sett is None else "other"
