"""LRA tasks. Importing this package registers every task with ``surnn.registry.TASKS``."""

from tasks import listops  # noqa: F401
