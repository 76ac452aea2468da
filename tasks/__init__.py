"""LRA tasks. ``tasks.all`` imports every task module, which registers it with
``surnn.registry.TASKS``; importing ``tasks.base`` alone stays light."""
