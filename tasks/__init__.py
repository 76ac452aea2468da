"""The tasks: one module per task, generators/ for the generated ones. Tasks depend only on
``surnn.errors`` and their data; ``surnn.harness.registry.TASKS`` names them."""
