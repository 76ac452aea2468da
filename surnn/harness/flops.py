"""FLOPs per batch with torch.utils.flop_counter.FlopCounterMode.

``executed`` counts what the model actually computes (selective-update layers count only
open updates, through their ops' registered formulas or gathered matmuls); ``dense``
counts the same model with every gate forced open (``surnn.gates.all_open``), i.e. what
a dense recurrent layer of the same shape would do. Matmuls, convolutions, attention and
the formulas registered by the mixers are counted; pointwise work is not.

Each is also split out for the sequence mixers alone (``mixer_executed``, ``mixer_dense``:
the modules ``...blocks.<i>.mixer``); the rest (embedding, feed-forward, norms, pooling,
head) always runs dense.
"""

from __future__ import annotations

import re

import torch
from torch.utils.flop_counter import FlopCounterMode

from surnn.gates import all_open

_MIXER = re.compile(r"(^|\.)blocks\.\d+\.mixer$")


def _mixer_flops(fc: FlopCounterMode) -> float:
    counts = fc.get_flop_counts()
    return float(sum(sum(v.values()) for k, v in counts.items() if _MIXER.search(k)))


@torch.no_grad()
def count_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Forward FLOPs for one batch (totals, not per sequence): ``executed`` and ``dense``
    for the whole model, ``mixer_executed`` and ``mixer_dense`` for its sequence mixers,
    and per residual block ``layers`` / ``layers_dense`` ({"layer0": ..., ...}; a dual
    task's two encodings summed)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as fc:
            model(batch)
        out = {
            "executed": float(fc.get_total_flops()),
            "mixer_executed": _mixer_flops(fc),
            "layers": _per_layer(fc),
        }
        with all_open(), FlopCounterMode(display=False) as fc:
            model(batch)
        out |= {
            "dense": float(fc.get_total_flops()),
            "mixer_dense": _mixer_flops(fc),
            "layers_dense": _per_layer(fc),
        }
    finally:
        model.train(was_training)
    return out


def _per_layer(fc: FlopCounterMode) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, counts in fc.get_flop_counts().items():
        m = re.search(r"\.blocks\.(\d+)$", name)
        if m:
            out[f"layer{m.group(1)}"] = float(sum(counts.values()))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][5:])))
