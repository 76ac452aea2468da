"""Tables of a time-only gate's first steps, served as views at inference.

A time-only gate's values at steps 0..T-1 depend on its parameters and buffers only, and
are the same whatever T is (each step is computed on its own). ``serve`` keeps one table
per name on the owning module (outside its state dict), built for the longest T asked so
far (rounded up to a power of two) and rebuilt when its key changes; every call with the
same T gets the same two views, and ``served_rates`` (given a served view of g) their
update and active rates, computed once per T. Imports nothing beyond torch.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

Build = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
# id of each served view of g -> [weak reference to it, its active view, rates or None];
# an entry leaves when its view is freed (its table rebuilt or its owner gone).
_SERVED: dict[int, list] = {}


def state_key(module: nn.Module, device, dtype) -> tuple:
    """What a table built from ``module``'s parameters and buffers depends on: the
    device, the dtype and each tensor's storage and version counter (an optimizer step,
    a checkpoint load or rate control changes one, a move changes the storage)."""
    if module._modules:
        state = [*module.parameters(), *module.buffers()]
    else:  # the module's own dicts: parameters() walks the module tree (~10 us a call)
        state = [t for d in (module._parameters, module._buffers) for t in d.values()]
    return (device, dtype, tuple((t.data_ptr(), t._version) for t in state if t is not None))


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
        views = table[4][T] = (table[2][:T], table[3][:T])
        vid = id(views[0])
        gone = weakref.ref(views[0], lambda _, vid=vid: _SERVED.pop(vid, None))
        _SERVED[vid] = [gone, views[1], None]
    return views


def served_rates(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(g.float().mean(), active.float().mean())`` when ``g`` is a view that ``serve``
    returned, computed once per view (two means cost ~30 us, a sparse recurrence step at
    batch 1 ~1 us); None for any other ``g``."""
    entry = _SERVED.get(id(g))
    if entry is None or entry[0]() is not g or not g.numel():
        return None
    if entry[2] is None:
        entry[2] = (g.float().mean(), entry[1].float().mean())
    return entry[2]
