"""Name -> class registries for mixers (``model=``) and tasks (``task=``).

Each registry mirrors one Hydra config group: ``model=X`` exists exactly when a mixer
named X is registered (a test checks both directions). Modules that define entries are
imported lazily on first use, so importing the registry costs nothing.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Any

from surnn.errors import ConfigError


class Registry:
    def __init__(self, kind: str, modules: Iterable[str]):
        self.kind = kind
        self._modules = tuple(modules)
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            for a in aliases:
                self._aliases[a] = name
            obj.registry_name = name
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for m in self._modules:
                importlib.import_module(m)

    def names(self, aliases: bool = False) -> list[str]:
        self._load()
        out = list(self._entries)
        if aliases:
            out += list(self._aliases)
        return sorted(out)

    def canonical(self, name: str) -> str:
        self._load()
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
        return self._entries[self.canonical(name)]


MIXERS = Registry("model", modules=("surnn.layer", "baselines"))
TASKS = Registry("task", modules=("tasks.all",))

register_mixer = MIXERS.register
register_task = TASKS.register
