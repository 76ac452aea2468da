"""Seeded data generators that write the LRA release layout (ListOps, Pathfinder).

Each generator is importable (used by the task when files are absent) and a command:
``python -m tasks.generators.listops --out DIR``.
"""
