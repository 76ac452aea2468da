"""Tables of a time-only gate's first steps, served as views at inference.

A time-only gate's values at steps 0..T-1 depend on its parameters and buffers only, and
are the same whatever T is (each step is computed on its own). ``serve`` keeps one table
per owning module and name, built for the longest T asked so far (rounded up to a power of
two) and rebuilt when its key changes (``state_key``: a parameter or buffer changes
version, storage, device or dtype); every call with the same T gets the same two views,
and ``served_rates`` (given a served view of g) their update and active rates, computed
once per view by ``served_extra``, which keeps with a view what is built once for it (the
compiled kernel's step plan too). The tables live here, keyed weakly by their owner:
outside its state dict, gone with it.

Listing a module's tensors (``parameters()``, ``buffers()``) costs ~5 us, more than the
rest of a served call, so a module without children has them listed once and again after
anything is registered on it (nn.Module's global registration hooks, installed at the
first listing: a parameter, buffer or child assigned, a checkpoint loaded with
``assign=True``) or when the device or dtype asked changes (a move that replaces the
tensors); a module with children has its tree's listed at every key. Imports nothing
beyond torch (and surnn.utils).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from surnn.utils import on_registration

Build = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


class Table(NamedTuple):
    key: tuple
    rows: int  # steps 0..rows-1 built: a power of two
    g: torch.Tensor
    active: torch.Tensor
    views: dict  # T -> (g[:T], active[:T]), the views served for T


# owner -> {name: Table}; an owner's entry leaves with the owner.
_TABLES: weakref.WeakKeyDictionary[nn.Module, dict[str, Table]] = weakref.WeakKeyDictionary()
# owner without children -> ((device, dtype), its parameters and buffers) as last listed;
# an entry leaves when anything is registered on its owner, or with the owner.
_LISTED: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
# id of each served view of g -> [weak reference to it, its active view, {name: what
# served_extra built for it}]; an entry leaves when its view is freed (its table rebuilt or
# its owner gone).
_SERVED: dict[int, list] = {}


def _relist(module: nn.Module, name: str, value) -> None:
    """Registration hook: ``module``'s tensors are listed again at its next key."""
    with contextlib.suppress(TypeError):  # an unhashable module: never listed
        _LISTED.pop(module, None)


def _tensors(module: nn.Module, device=None, dtype=None) -> tuple[torch.Tensor, ...]:
    """``module``'s parameters and buffers (its tree's, when it has children), listed
    again only when something is registered on it or ``(device, dtype)`` changes."""
    listed = _LISTED.get(module)
    if listed is not None and listed[0] == (device, dtype):
        return listed[1]
    on_registration(_relist)
    leaf = next(module.children(), None) is None  # a gate: its own tensors, no tree walk
    state = (*module.parameters(recurse=not leaf), *module.buffers(recurse=not leaf))
    if leaf:  # a registration on a child calls the hook with the child, not this module
        _LISTED[module] = ((device, dtype), state)
    return state


def state_key(module: nn.Module, device, dtype) -> tuple:
    """What a table built from ``module``'s parameters and buffers depends on: the
    device, the dtype and each tensor's storage and version counter (an optimizer step,
    a checkpoint load or rate control changes one, a move changes the storage)."""
    state = _tensors(module, device, dtype)
    return (device, dtype, tuple((t.data_ptr(), t._version) for t in state))


def table(owner: nn.Module, name: str) -> Table | None:
    """``owner``'s table ``name`` as ``serve`` last built it (None: not built)."""
    return _TABLES.get(owner, {}).get(name)


def serve(owner: nn.Module, name: str, key, T: int, build: Build):
    """(g, active): the first T rows of ``owner``'s table ``name``, built by ``build(n)``
    for n >= T, a power of two, when missing, too short or made for another ``key``."""
    tables = _TABLES.get(owner)
    if tables is None:
        tables = _TABLES[owner] = {}
    entry = tables.get(name)
    if entry is None or entry.key != key or entry.rows < T:
        n = 1 << max(T - 1, 0).bit_length()
        entry = tables[name] = Table(key, n, *build(n), {})
    views = entry.views.get(T)
    if views is None:
        views = entry.views[T] = (entry.g[:T], entry.active[:T])
        vid = id(views[0])
        gone = weakref.ref(views[0], lambda _, vid=vid: _SERVED.pop(vid, None))
        _SERVED[vid] = [gone, views[1], {}]
    return views


def served_rates(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(g.float().mean(), active.float().mean())`` when ``g`` is a view that ``serve``
    returned, computed once per view (two means cost ~30 us, a sparse recurrence step at
    batch 1 ~1 us); None for any other ``g``."""
    return served_extra(g, "rates", _rates) if g.numel() else None


def _rates(g: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return g.float().mean(), active.float().mean()


def served_extra(g: torch.Tensor, name: str, build: Callable[[torch.Tensor, torch.Tensor], Any]):
    """``build(g, active)`` when ``g`` is a view that ``serve`` returned (``active``: its
    active view), built once per view and name and kept with the view (its rates, the
    compiled kernel's step plan); None for any other ``g``."""
    entry = _SERVED.get(id(g))
    if entry is None or entry[0]() is not g:
        return None
    extras = entry[2]
    if name not in extras:
        extras[name] = build(g, entry[1])
    return extras[name]
