"""Trainer, checkpoints, metrics and loggers shared by every model and task."""
