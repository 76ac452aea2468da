"""FLOPs per batch with torch.utils.flop_counter.FlopCounterMode.

``executed`` counts what the model actually computes (selective-update layers count only
open updates, through their ops' registered formulas or gathered matmuls); ``dense``
counts the same model with every gate forced open (``surnn.gates.all_open``), i.e. what
a dense recurrent layer of the same shape would do. Matmuls, convolutions, attention and
the formulas registered by the mixers are counted; pointwise work is not.
"""

from __future__ import annotations

import re

import torch
from torch.utils.flop_counter import FlopCounterMode

from surnn.gates import all_open


@torch.no_grad()
def count_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Forward FLOPs for one batch (totals, not per sequence): ``executed``, ``dense``, and
    per residual block ``layers`` / ``layers_dense`` ({"layer0": ..., ...}; a dual task's
    two encodings summed)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as fc:
            model(batch)
        executed, layers = float(fc.get_total_flops()), _per_layer(fc)
        with all_open(), FlopCounterMode(display=False) as fc:
            model(batch)
        dense, layers_dense = float(fc.get_total_flops()), _per_layer(fc)
    finally:
        model.train(was_training)
    return {"executed": executed, "dense": dense, "layers": layers, "layers_dense": layers_dense}


def _per_layer(fc: FlopCounterMode) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, counts in fc.get_flop_counts().items():
        m = re.search(r"\.blocks\.(\d+)$", name)
        if m:
            out[f"layer{m.group(1)}"] = float(sum(counts.values()))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][5:])))
