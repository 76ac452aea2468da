"""Tables of a time-only gate's first steps, served as views at inference.

A time-only gate's values at steps 0..T-1 depend on its parameters and buffers only, and
are the same whatever T is (each step is computed on its own). ``serve`` keeps one table
per name on the owning module (outside its state dict), built for the longest T asked so
far (rounded up to a power of two) and rebuilt when its key changes; every call with the
same T gets the same two views, and ``served_rates`` their update and active rates,
computed once per T. Imports nothing beyond torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Build = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def state_key(module: nn.Module, device, dtype) -> tuple:
    """What a table built from ``module``'s parameters and buffers depends on: the
    device, the dtype and each tensor's storage and version counter (an optimizer step,
    a checkpoint load or rate control changes one, a move changes the storage)."""
    if module._modules:
        state = [*module.parameters(), *module.buffers()]
    else:  # the module's own dicts: parameters() walks the module tree (~10 us a call)
        state = [t for d in (module._parameters, module._buffers) for t in d.values()]
    return (str(device), dtype, tuple((t.data_ptr(), t._version) for t in state if t is not None))


def serve(owner: nn.Module, name: str, key, T: int, build: Build):
    """(g, active): the first T rows of ``owner``'s table ``name``, built by ``build(n)``
    for n >= T, a power of two, when missing, too short or made for another ``key``."""
    table = owner.__dict__.get(name)
    if table is None or table[0] != key or table[1] < T:
        n = 1 << max(T - 1, 0).bit_length()
        g, active = build(n)
        table = owner.__dict__[name] = (key, n, g, active, {})
    views = table[4].get(T)
    if views is None:
        views = table[4][T] = [table[2][:T], table[3][:T], None]
    return views[0], views[1]


def served_rates(owner: nn.Module, g: torch.Tensor, names) -> tuple | None:
    """``(g.float().mean(), active.float().mean())`` when ``g`` is what one of ``owner``'s
    tables ``names`` served, computed once per T (two means cost ~30 us, a sparse
    recurrence step at batch 1 ~1 us); None for any other ``g``."""
    if g.dim() != 2 or not g.numel():
        return None
    for name in names:
        table = owner.__dict__.get(name)
        views = table[4].get(g.shape[0]) if table is not None else None
        if views is not None and views[0] is g:
            if views[2] is None:
                views[2] = (views[0].float().mean(), views[1].float().mean())
            return views[2]
    return None
