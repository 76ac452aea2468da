"""Errors a user can cause. run.py prints them as one line and exits with status 2."""


class HarnessError(Exception):
    """A user-fixable problem: bad override, unknown name, missing or corrupt data.

    The message names the input, what was expected and how to fix it.
    """


class ConfigError(HarnessError):
    """A configuration value or name that is not valid."""


class DataError(HarnessError):
    """Missing, malformed or corrupt data files."""


class TrainingError(HarnessError):
    """Training cannot continue (e.g. a non-finite loss)."""
