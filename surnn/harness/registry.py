"""Name -> class tables for mixers (``model=``) and tasks (``task=``).

Each table mirrors one Hydra config group: ``model=X`` exists exactly when the mixer table
has X (a test checks both directions). Entries are ``"module:Class"`` strings imported on
first use, so importing the registry costs nothing and the modules it names never import
it back: a new mixer or task is one line here plus one config file.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any

from surnn.errors import ConfigError


class Registry:
    def __init__(self, kind: str, entries: dict[str, str], aliases: dict[str, str] | None = None):
        self.kind = kind
        self._entries = dict(entries)
        self._aliases = dict(aliases or {})
        self._loaded: dict[str, Any] = {}

    def __iter__(self) -> Iterator[str]:
        """The names in the table's order (no aliases)."""
        return iter(self._entries)

    def names(self, aliases: bool = False) -> list[str]:
        out = list(self._entries)
        if aliases:
            out += list(self._aliases)
        return sorted(out)

    def canonical(self, name: str) -> str:
        name = self._aliases.get(name, name)
        if name not in self._entries:
            valid = self.names(aliases=True)
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean {self.kind}={close[0]}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}: valid {self.kind}s are {', '.join(valid)}.{hint}"
            )
        return name

    def get(self, name: str) -> Any:
        name = self.canonical(name)
        if name not in self._loaded:
            module, _, attr = self._entries[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]


MIXERS = Registry(
    "model",
    {
        "surnn": "surnn.harness.mixer:SuRNNMixer",
        "gru": "baselines.rnn:GRUMixer",
        "lstm": "baselines.rnn:LSTMMixer",
        "s4d": "baselines.s4d:S4DMixer",
        "transformer": "baselines.transformer:AttentionMixer",
        "hybrid": "surnn.harness.backbone:Hybrid",  # mixer kinds by layer (layer_plan)
    },
    aliases={"sugru": "surnn", "s4": "s4d"},
)
TASKS = Registry(
    "task",
    {
        "listops": "tasks.listops:ListOps",
        "text": "tasks.text:Text",
        "retrieval": "tasks.retrieval:Retrieval",
        "image": "tasks.image:Image",
        "pathfinder": "tasks.pathfinder:Pathfinder",
        "pathx": "tasks.pathfinder:PathX",
        "smnist": "tasks.pixel:SMNIST",
        "psmnist": "tasks.pixel:PSMNIST",
        "scifar": "tasks.pixel:SCIFAR",
        "selective_copy": "tasks.memory:SelectiveCopy",
        "copy_memory": "tasks.memory:CopyMemory",
        "adding": "tasks.memory:Adding",
        "wikitext103": "tasks.wikitext:WikiText103",
        "wikitext2": "tasks.wikitext:WikiText2",
    },
)
