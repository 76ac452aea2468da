"""The setting a finished run was in, read from its run folder (results.json, config.yaml).

A run in its task's standard setting (full data, every test example) may sit beside
published numbers; any other run (the demo's short ListOps, a smoke run, a CPU-sized preset
such as ``memory/copy_memory_cpu``, a test scored on part of the test set, data of another
size) carries a label saying what differs. Used by
``surnn.harness.paper_tables`` (tables by setting) and ``scripts/bench_checkpoint.py`` (the
setting of a benchmarked checkpoint).

A run folder's results.json records its data as the task describes it (``data``: its source,
generator settings, machine-local paths). A committed copy keeps only its portable part
(``committed_data``: whether the data was generated, the generator settings, sizes), and one
written before that keeps none; for such a ListOps run the generator settings are those its
recorded command composes from today's configs. So a table comes out the same from run
folders and from committed copies.
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Any

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
#: ListOps generator settings whose data can be the LRA release (tasks.listops reads the release
#: files for these when present); any other settings always generate
LRA_LISTOPS_SPEC = {
    "seed": 0,
    "n_train": 96000,
    "n_val": 2000,
    "n_test": 2000,
    **LRA_LISTOPS,
    "max_args": 10,
}


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
    exp = experiment_of(r) or ""
    demo = demo_of(exp)
    if demo:
        marks.append(f"demo ({demo})" if demo == exp else f"demo ({exp}, from {demo})")
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
    gen = listops_generate(r)
    lra_like = isinstance(gen, dict) and all(gen.get(k, v) == v for k, v in LRA_LISTOPS.items())
    if r.task == "listops" and isinstance(gen, dict) and not lra_like:
        marks.append(
            f"ListOps generated with lengths {gen.get('min_length')}-"
            f"{gen.get('max_length')}, depth <= {gen.get('max_depth')}"
        )
    return "; ".join(marks) or None


def generated_data(r: RunResult) -> bool:
    """The run read data this harness generated (ListOps, Pathfinder), not a release: as its
    ``data`` records it (a committed copy: ``generated``), else (a committed copy without
    ``data``) when it is ListOps with generator settings other than LRA's, which always
    generate. Any other run without ``data`` counts as not generated."""
    data = r.data or {}
    if "generated" in data:
        return bool(data["generated"])
    if r.data is not None:
        return str(data.get("source") or "").startswith("generated")
    gen = listops_generate(r)
    return isinstance(gen, dict) and any(gen.get(k, v) != v for k, v in LRA_LISTOPS_SPEC.items())


#: the keys of a run's ``data`` that hold no machine-local path or cache key: every task's
#: (tasks.base.Task.describe), ListOps' generator settings, a generated task's options
PORTABLE_DATA = ("name", "objective", "n_classes", "input_kind", "vocab_size", "input_dim")
PORTABLE_DATA += ("max_len", "dual", "generate", "options")


def committed_data(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a committed copy of a results.json keeps of its ``data`` (its paths and cache keys
    are machine-local): whether the data was generated, and the ``PORTABLE_DATA`` keys."""
    if data is None:
        return None
    kept = {k: data[k] for k in PORTABLE_DATA if k in data}
    return {**kept, "generated": generated_data(RunResult(data=data))}


def listops_generate(r: RunResult) -> dict[str, Any] | None:
    """A ListOps run's generator settings (None: release only, or not ListOps): its
    ``data``'s, or for a committed copy without ``data`` those its command composes."""
    if r.data is not None or r.task != "listops":
        return (r.data or {}).get("generate")
    return _composed_generate(r.command or "")


@functools.lru_cache(maxsize=64)
def _composed_generate(command: str) -> dict[str, Any] | None:
    """``task.options.generate`` of the config a recorded run.py command composes today
    (None when it has none or no longer composes)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from surnn.harness.config import CONFIG_DIR  # registers the config schemas too

    words = shlex.split(command)
    at = next((i for i, w in enumerate(words) if w.endswith("run.py")), None)
    if at is None:
        return None
    overrides = [w for w in words[at + 1 :] if "=" in w and not w.startswith(("hydra.", "-"))]
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            gen = OmegaConf.select(compose("config", overrides=overrides), "task.options.generate")
            gen = OmegaConf.to_container(gen, resolve=True) if gen is not None else None
    except (HydraException, OmegaConfBaseException):
        return None
    # as the run records it (the generator's settings, not ``workers``)
    return {k: v for k, v in gen.items() if k in LRA_LISTOPS_SPEC} if gen else None


def experiment_of(r: RunResult) -> str | None:
    """The preset the run was started with (``experiment=...`` on its command line)."""
    cmd = r.command or ""
    return cmd.split("experiment=")[1].split()[0] if "experiment=" in cmd else None


@functools.cache
def demo_of(exp: str, depth: int = 4) -> str | None:
    """The demo preset (``demo_*``) the experiment ``exp`` is or extends through its
    ``/experiment/...`` defaults (``rate_control/t017`` extends ``demo_listops``), else None."""
    if not exp or depth < 0:
        return None
    if exp.startswith("demo_"):
        return exp
    from surnn.harness.config import CONFIG_DIR

    path = Path(CONFIG_DIR) / "experiment" / f"{exp}.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    except (yaml.YAMLError, AttributeError):
        return None
    for d in defaults:
        if isinstance(d, str) and d.startswith("/experiment/"):
            found = demo_of(d[len("/experiment/") :], depth - 1)
            if found:
                return found
    return None


def scale_of(r: RunResult, run_dir: str | Path | None = None) -> str:
    """One word for the run's size: smoke, demo, mini (the mini presets), full (the
    standard setting) or other (any other non-standard setting)."""
    exp = experiment_of(r) or ""
    sett = setting_of(r, run_dir)
    if sett and "smoke" in sett.split("; "):
        return "smoke"
    if demo_of(exp):
        return "demo"
    if exp.startswith("mini/") or (sett or "").startswith("mini"):
        return "mini"
    return "full" if sett is None else "other"
