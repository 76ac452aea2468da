"""Baseline mixers. Importing this package registers them with ``surnn.registry.MIXERS``
(and the FLOP formulas of ``baselines.flops``)."""

from baselines import flops, rnn, s4d, transformer  # noqa: F401
