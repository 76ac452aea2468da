"""Imports every task module so that each registers itself (``surnn.registry.TASKS``)."""

from tasks import image, listops, pathfinder, pixel, retrieval, text  # noqa: F401
