"""Baseline mixers. Importing this package registers them with ``surnn.registry.MIXERS``."""

from baselines import rnn  # noqa: F401
