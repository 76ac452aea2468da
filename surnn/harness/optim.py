"""The optimizer's parameter groups and the learning-rate schedule: AdamW groups by
(lr, weight decay) from optimizer hints (``surnn.utils.optim_hint``), then linear warmup
and cosine decay to ``min_lr_ratio`` of the peak."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from surnn.harness.config import OptimConfig


def param_groups(model: torch.nn.Module, ocfg: OptimConfig) -> list[dict[str, Any]]:
    """Group parameters by (lr, weight decay): optimizer hints on a parameter
    (``param._optim``) win; 1-D parameters (biases, norms) get no decay by default."""
    groups: dict[tuple[float, float], list] = defaultdict(list)
    seen = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        hints = getattr(p, "_optim", {})
        wd = ocfg.weight_decay
        if ocfg.no_decay_1d and p.ndim < 2:
            wd = 0.0
        wd = hints.get("weight_decay", wd)
        lr = hints.get("lr") or ocfg.lr
        groups[(float(lr), float(wd))].append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
