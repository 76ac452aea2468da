"""Imports every task module so that each registers itself (``surnn.registry.TASKS``)."""

from tasks import image, listops, pathfinder, retrieval, text  # noqa: F401
