"""FLOPs per batch with torch.utils.flop_counter.FlopCounterMode.

``executed`` counts what the model actually computes (selective-update layers count only
open updates, through their ops' registered formulas or gathered matmuls); ``dense``
counts the same model with every gate forced open (``surnn.gates.all_open``), i.e. what
a dense recurrent layer of the same shape would do. Matmuls, convolutions, attention and
the formulas registered by the mixers are counted; pointwise work is not.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from surnn.gates import all_open


@torch.no_grad()
def count_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Forward FLOPs for one batch: {"executed", "dense"} (totals, not per sequence)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as fc:
            model(batch)
        executed = float(fc.get_total_flops())
        with all_open(), FlopCounterMode(display=False) as fc:
            model(batch)
        dense = float(fc.get_total_flops())
    finally:
        model.train(was_training)
    return {"executed": executed, "dense": dense}
