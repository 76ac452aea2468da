"""Errors a user can cause. run.py prints them as one line and exits with status 2."""

from __future__ import annotations

from typing import Any


class HarnessError(Exception):
    """A user-fixable problem: bad override, unknown name, missing or corrupt data.

    The message names the input, what was expected and how to fix it.
    """


class ConfigError(HarnessError):
    """A configuration value or name that is not valid.

    A bad value of one option is raised as ``ConfigError.option(key, value, detail)`` and
    reads ``key=value: detail``. Code that passed the option on from a larger config
    re-raises ``error.within(prefix)``, which prefixes the key with its path there: the
    gate's ``init_rate=2: ...`` reaches the user as ``model.options.gate.init_rate=2: ...``.
    """

    def __init__(self, message: str, key: str | None = None, value: Any = None, detail: str = ""):
        super().__init__(message)
        self.key, self.value, self.detail = key, value, detail

    @classmethod
    def option(cls, key: str, value: Any, detail: str) -> ConfigError:
        return cls(f"{key}={show(value)}: {detail}", key, value, detail)

    def within(self, prefix: str) -> ConfigError:
        """This error with its key under ``prefix`` (itself when it names no key)."""
        if self.key is None:
            return self
        return ConfigError.option(prefix + self.key, self.value, self.detail)


class DataError(HarnessError):
    """Missing, malformed or corrupt data files."""


class TrainingError(HarnessError):
    """Training cannot continue (e.g. a non-finite loss)."""


def show(value: Any) -> str:
    """A config value as the user writes it: null, true/false, 'text', 3, 0.5, [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return str(value)
