"""LRA tasks. Importing this package registers every task with ``surnn.registry.TASKS``."""

from tasks import image, listops, pathfinder, retrieval, text  # noqa: F401
