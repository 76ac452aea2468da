"""Imports every task module so that each registers itself (``surnn.registry.TASKS``)."""

from tasks import listops  # noqa: F401
