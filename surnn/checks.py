"""Rules for option values, used by whatever defines the option (a constructor, a config
schema) to check it once, where it is defined.

A rule knows which values it takes and says so in words; ``rule.check(key, value)``
returns the value or raises ``ConfigError.option``, one line naming the key:
``int_at_least(1).check("n_freqs", 0)`` -> ``n_freqs=0: expected an integer >= 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from surnn.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    allowed: str  # "an integer >= 1": what follows "expected"

    def check(self, key: str, value: Any) -> Any:
        if not self.ok(value):
            raise ConfigError.option(key, value, f"expected {self.allowed}")
        return value


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _maybe(ok: Callable[[Any], bool], text: str, optional: bool) -> Rule:
    if optional:
        return Rule(lambda v: v is None or ok(v), text + " or null")
    return Rule(ok, text)


def int_at_least(lo: int, optional: bool = False) -> Rule:
    return _maybe(lambda v: is_int(v) and v >= lo, f"an integer >= {lo}", optional)


def number(optional: bool = False) -> Rule:
    return _maybe(is_number, "a number", optional)


def positive(optional: bool = False, zero_means: str | None = None) -> Rule:
    if zero_means:
        text = f"a number > 0 (0 = {zero_means})"
        return _maybe(lambda v: is_number(v) and v >= 0, text, optional)
    return _maybe(lambda v: is_number(v) and v > 0, "a number > 0", optional)


def at_least(lo: float, optional: bool = False, note: str = "") -> Rule:
    text = f"a number >= {lo}" + (f" ({note})" if note else "")
    return _maybe(lambda v: is_number(v) and v >= lo, text, optional)


def between(
    lo: float, hi: float, lo_open: bool = False, hi_open: bool = False, optional: bool = False
) -> Rule:
    text = f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def ok(v):
        return (
            is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        )

    return _maybe(ok, text, optional)


def one_of(*choices: Any) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(str(c) for c in choices))


def boolean(optional: bool = False) -> Rule:
    if optional:
        return Rule(lambda v: v is None or isinstance(v, bool), "true, false or null")
    return Rule(lambda v: isinstance(v, bool), "true or false")
