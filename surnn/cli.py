"""Command-line checks done before Hydra composes the config.

Hydra reports an unknown config choice over several lines with a stack-trace hint; a
user who typed ``model=nope`` deserves one line with the valid choices.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from surnn.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
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


def variant_from_overrides(overrides: list[str]) -> str | None:
    """The label of a run's model variant: its ``model.*`` command-line overrides, without
    the ``model.`` and ``options.`` prefixes, sorted ("gate.group_size=8,hidden_size=64");
    None when the model is the config file's."""
    parts = []
    for o in overrides:
        key, eq, value = o.lstrip("+~").partition("=")
        if not eq or not key.startswith("model."):
            continue
        key = key.removeprefix("model.").removeprefix("options.")
        parts.append(f"{key}={value}")
    return ",".join(sorted(parts)) or None
