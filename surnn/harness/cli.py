"""Command-line checks done before Hydra composes the config.

Hydra reports an unknown config choice over several lines with a stack-trace hint; a
user who typed ``model=nope`` deserves one line with the valid choices.

What the checks checked and built is handed to the run (``prechecked``) when Hydra's own
config for it holds the same values, so each value is checked once and a run's model built
once.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    InterpolationResolutionError,
    OmegaConfBaseException,
    ValidationError,
)

from surnn.errors import ConfigError
from surnn.harness.config import CONFIG_DIR  # the import registers the config schemas

if TYPE_CHECKING:
    from surnn.harness.validate import Checked

GROUPS = ("task", "model", "trainer", "optim", "logger", "experiment")


def choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    root = config_dir / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def check_overrides(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Raise ConfigError for a config-group choice that has no config file."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in GROUPS or value in ("", "null"):
            continue
        valid = choices(key, config_dir)
        for v in value.split(","):
            v = v.strip()
            if v.startswith(("choice(", "range(", "glob(")) or v in valid:
                continue
            close = difflib.get_close_matches(v, valid, n=1)
            hint = f" Did you mean {key}={close[0]}?" if close else ""
            raise ConfigError(f"unknown {key} {v!r}: valid choices are {', '.join(valid)}.{hint}")


_SWEEP_FN = ("choice(", "range(", "interval(", "glob(", "shuffle(", "sort(", "tag(")


def _first_value(value: str) -> str | None:
    """The first value of a sweep (``a,b`` -> ``a``); None for sweep functions."""
    if value.startswith(_SWEEP_FN):
        return None
    if "," in value and not value.startswith(("[", "{", "'", '"')):
        return value.split(",", 1)[0]
    return value


def check_keys(argv: list[str], config_dir: Path = CONFIG_DIR) -> DictConfig | None:
    """Raise ConfigError for a dotted override of a key the composed config lacks
    (``trainer.max_stepz=5``), naming the closest valid key. Hydra reports it over several
    lines and suggests appending the misspelt key with ``+``. Sweeps are checked with
    their first value; ``hydra...`` overrides are left to Hydra. Returns the composed
    config (None when Hydra itself will report the problem)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    kept = []
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        first = _first_value(value)
        if first is None or key.lstrip("+~").startswith("hydra"):
            continue
        kept.append(f"{key}={first}")
    with initialize_config_dir(str(config_dir.resolve()), version_base="1.3"):
        try:
            return compose("config", overrides=kept)
        except ConfigCompositionException as e:
            cause = e.__cause__
            if isinstance(cause, ValidationError):  # a value the schema's type rejects
                key = getattr(cause, "full_key", None) or "?"
                raise ConfigError(f"{key}: {str(cause).splitlines()[0]}") from None
            m = re.search(r"Could not override '([^']+)'", str(e))
            if m is None or not isinstance(cause, ConfigAttributeError):
                return None  # not a missing key: Hydra (or the run) reports it
            bad = m.group(1)
            rest = [o for o in kept if o.split("=", 1)[0].lstrip("+~") != bad]
            try:
                cfg = compose("config", overrides=rest)
            except ConfigCompositionException:
                return None
    parent, _, leaf = bad.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, valid, n=1)
    hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    where = parent or "the config"
    raise ConfigError(
        f"unknown key {bad!r}: {where} has no {leaf!r} (valid: {', '.join(valid)}).{hint} "
        f"To add a new key on purpose, write +{bad}=..."
    )


def precheck(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Everything checked before Hydra starts (and makes a run folder or queues a job):
    config-group choices, key names, and every value of the composed config; for a sweep
    (``-m``), of every job's config. Raises ConfigError. What it checked (and for a single
    run, the model it built from the seed) is kept for the run (``prechecked``)."""
    from surnn.harness.validate import check_config

    _HANDED.clear()
    check_overrides(argv, config_dir)
    cfg = check_keys(argv, config_dir)
    if cfg is None:
        return
    sweep = any(a in ("-m", "--multirun") for a in argv)
    try:
        first = check_config(cfg, keep=not sweep)
    except InterpolationResolutionError as e:
        raise ConfigError(f"the config cannot be resolved: {str(e).splitlines()[0]}") from None
    if sweep:
        check_sweep(argv, config_dir, first=(cfg, first))
    else:
        _hand(cfg, first)


#: What precheck checked, by the values checked (``_values``): a run takes its own.
_HANDED: dict[str, list[Checked]] = {}


def _values(cfg: DictConfig) -> str | None:
    """A composed config's values, resolved, but those that name the run's folder and label
    (``output_dir``, ``run_id``, ``variant``: a sweep job sets them); None when they do not
    resolve."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return None
    for key in ("output_dir", "run_id", "variant"):
        values.pop(key, None)
    return json.dumps(values, sort_keys=True, default=str)


def _hand(cfg: DictConfig, checked: Checked) -> None:
    key = _values(cfg)
    if key is not None:
        _HANDED.setdefault(key, []).append(checked)


def prechecked(cfg: DictConfig, last: bool = True) -> Checked | None:
    """What precheck checked for a config of ``cfg``'s values (the run's folder aside), for
    ``harness.run.train``; None when it checked none. Each is taken once; ``last``: the
    process runs no other, and what is left is dropped (a model among it)."""
    key = _values(cfg)
    found = _HANDED.get(key) if key is not None else None
    checked = found.pop(0) if found else None
    if last:
        _HANDED.clear()
    return checked


def sweep_jobs(argv: list[str]) -> list[list[str]] | None:
    """The overrides of each job of a sweep (``a=1,2 b=x,y``: four jobs), expanded as
    Hydra's sweeper expands them; ``hydra...`` overrides set the launcher, not the jobs.
    None when Hydra cannot parse them (Hydra then reports it)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    args = [a for a in args if not a.split("=", 1)[0].lstrip("+~").startswith("hydra")]
    try:
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]
    except (HydraException, AssertionError):
        return None


def check_sweep(
    argv: list[str],
    config_dir: Path = CONFIG_DIR,
    first: tuple[DictConfig, Checked] | None = None,
) -> int:
    """Check every job of a sweep before the first one starts or is queued: each job's
    config is composed and checked as the job itself will check it (the model is built
    once per distinct task and model). The first bad job raises ConfigError naming the
    job's swept values, so a bad value fails before any job runs (not after the jobs before
    it, or after its queue time on SLURM). ``first``: a config already checked (precheck's,
    of each sweep's first value) and its check, which a job of its values takes. Each job's
    check is kept for it (``prechecked``). Returns the number of jobs checked."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from surnn.harness.validate import check_config

    jobs = sweep_jobs(argv)
    if not jobs:
        return 0
    varies = {
        key
        for key in {o.split("=", 1)[0] for job in jobs for o in job}
        if len({o for job in jobs for o in job if o.split("=", 1)[0] == key}) > 1
    }
    built: set[str] = set()
    done = None
    if first is not None:
        built.add(_shape(first[0]))
        done = _values(first[0])
    with initialize_config_dir(str(config_dir.resolve()), version_base="1.3"):
        for i, job in enumerate(jobs):
            label = " ".join(o for o in job if o.split("=", 1)[0] in varies) or " ".join(job)
            where = f"sweep job #{i} of {len(jobs)} ({label})"
            try:
                cfg = compose("config", overrides=job)
                shape = _shape(cfg)
                if done is not None and _values(cfg) == done:
                    _hand(cfg, first[1])  # checked already
                    done = None
                    continue
                _hand(cfg, check_config(cfg, model=shape not in built))
                built.add(shape)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            except (HydraException, InterpolationResolutionError) as e:
                raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from None
    return len(jobs)


def _shape(cfg: DictConfig) -> str:
    """What the model's check depends on: the task and model, resolved."""
    parts = [OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model")]
    return json.dumps(parts, sort_keys=True, default=str)


def sweep_job_location(run_dir: str | Path, output_dir: str) -> dict[str, str]:
    """The overrides that name a sweep job's folder as a run of its own: ``run_id`` (the
    folder below ``output_dir``, e.g. ``sweeps/<date>/<job>``), and ``output_dir`` too
    when the sweep's folder is elsewhere (``hydra.sweep.dir=...``)."""
    run_dir = Path(run_dir).resolve()
    try:
        return {
            "run_id": run_dir.relative_to(Path(str(output_dir)).expanduser().resolve()).as_posix()
        }
    except ValueError:
        return {"output_dir": str(run_dir.parent), "run_id": run_dir.name}


def variant_from_overrides(overrides: list[str]) -> str | None:
    """The label of a run's model variant: its ``model.*`` command-line overrides, without
    the ``model.`` and ``options.`` prefixes, sorted ("gate.group_size=8,hidden_size=64");
    None when the model is the config file's. ``impl`` (which kernel runs the layer) is left
    out: every implementation computes the same model."""
    parts = []
    for o in overrides:
        key, eq, value = o.lstrip("+~").partition("=")
        if not eq or not key.startswith("model."):
            continue
        key = key.removeprefix("model.").removeprefix("options.")
        if key == "impl":
            continue
        parts.append(f"{key}={value}")
    return ",".join(sorted(parts)) or None
