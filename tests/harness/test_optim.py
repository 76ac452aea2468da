"""surnn/harness/optim.py: the learning-rate schedule's shape, and parameter groups by (lr,
weight decay) from optimizer hints, 1-D parameters without decay."""

from __future__ import annotations

import pytest
import torch

from surnn.harness.config import OptimConfig
from surnn.harness.optim import param_groups, warmup_cosine
from surnn.utils import optim_hint


def test_warmup_cosine_shape():
    assert warmup_cosine(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_param_groups_follow_hints_and_no_decay_for_1d():
    lin = torch.nn.Linear(4, 4)
    special = optim_hint(torch.nn.Parameter(torch.zeros(3, 3)), lr=1e-4, weight_decay=0.0)
    m = torch.nn.Module()
    m.lin, m.special = lin, special
    groups = param_groups(m, OptimConfig(lr=1e-3, weight_decay=0.1))
    by = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in groups}
    assert by == {(1e-3, 0.1): 16, (1e-3, 0.0): 4, (1e-4, 0.0): 9}


def test_a_shared_parameter_is_grouped_once_and_frozen_ones_not_at_all():
    m = torch.nn.Module()
    m.a = torch.nn.Linear(3, 3, bias=False)
    m.b = m.a  # tied
    m.frozen = torch.nn.Linear(3, 3)
    m.frozen.requires_grad_(False)
    groups = param_groups(m, OptimConfig(lr=1e-3, weight_decay=0.1, no_decay_1d=False))
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups] == [(1e-3, 0.1, 1)]
