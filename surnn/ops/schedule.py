"""Turn a time-only compute mask into a plan the fast paths can execute cheaply.

Neurons with the same open/closed pattern over time form a group; at every step a group
is either wholly active or wholly closed. When there are few groups (slab schedules such
as the staggered interval gate, or any rhythm whose neurons fall into few phase classes),
the weight rows are laid out group by group, gate-major inside a group
(``[r_G; z_G; n_G]``), so an active group's rows are one contiguous view, its input
projections can be hoisted into one large GEMM, and its weight gradients are one GEMM
after the backward loop. Neurons are reordered once (lexicographic order of their
patterns) only when the groups are not already contiguous; the state keeps the original
order. With many groups (e.g. a learned rhythm with free phases) each step gathers the
active rows instead.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from surnn.utils import valid_mask

MAX_BLOCKS = 4  # more active groups than this in one step -> gather their rows instead
MAX_GROUPS = 64  # more distinct neuron patterns than this -> gather mode


@dataclass
class Plan:
    """steps[t]: blocks (wsel, hsel, gid); wsel selects 3A weight rows of the layout in
    ``[r; z; n]`` order, hsel the same A neurons in the state (original order); each is
    a slice (a view) or a LongTensor (a gather); gid is the group the block is (None
    for gathered blocks). ``lay[j]`` is the original row
    (gate * H + neuron) of layout row j (None: the nn.GRU layout itself). groups:
    (start, end, steps) neuron ranges in plan order, or None in gather mode."""

    lay: torch.Tensor | None
    steps: list
    groups: list | None
    all_active: bool


def _groups(cols: np.ndarray) -> np.ndarray:
    """Boundaries of runs of identical adjacent rows of cols [H, T]."""
    H = cols.shape[0]
    change = np.flatnonzero((cols[1:] != cols[:-1]).any(1)) + 1 if H > 1 else np.array([], int)
    return np.concatenate(([0], change, [H])).astype(np.int64)


def _gather_plan(m: np.ndarray) -> Plan:
    T, H = m.shape
    counts = m.sum(1).astype(np.int64)
    starts = np.cumsum(counts) - counts
    t_of, cols = np.nonzero(m)
    cols = cols.astype(np.int64)
    # Step t's weight rows [cols_t, cols_t + H, cols_t + 2H] at [3*start_t, 3*end_t).
    local = np.arange(len(cols)) - starts[t_of]
    wall = np.empty(3 * len(cols), dtype=np.int64)
    for k in range(3):
        wall[3 * starts[t_of] + k * counts[t_of] + local] = cols + k * H
    wall_t, cols_t = torch.from_numpy(wall), torch.from_numpy(cols)
    steps = []
    for c, s in zip(counts.tolist(), starts.tolist()):
        if c == H:
            steps.append([(slice(0, 3 * H), slice(0, H), None)])
        elif c:
            steps.append([(wall_t[3 * s : 3 * (s + c)], cols_t[s : s + c], None)])
        else:
            steps.append([])
    return Plan(lay=None, steps=steps, groups=None, all_active=bool(m.all()))


_CACHE: OrderedDict[tuple, Plan] = OrderedDict()
_CACHE_SIZE = 16  # plans of recent masks (evaluation reuses each layer's fixed schedule)


def make_plan(mask: torch.Tensor) -> Plan:
    """mask: [T, H] bool (time-only compute mask) -> Plan (cached by the mask's content)."""
    m = mask.detach().to("cpu", torch.bool).numpy()
    key = (m.shape, MAX_BLOCKS, MAX_GROUPS, hashlib.blake2b(np.packbits(m).tobytes()).digest())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    plan = _make_plan(m)
    _CACHE[key] = plan
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return plan


def _make_plan(m: np.ndarray) -> Plan:
    T, H = m.shape
    if T == 0 or H == 0:
        return _gather_plan(m)
    perm = np.arange(H)
    bounds = _groups(m.T)
    if len(bounds) - 1 > MAX_GROUPS:
        packed = np.packbits(m.T, axis=1)  # [H, ceil(T/8)]: each neuron's pattern
        perm = np.lexsort(packed.T[::-1])
        bounds = _groups(m.T[perm])
        if len(bounds) - 1 > MAX_GROUPS:
            return _gather_plan(m)
    identity = bool((perm == np.arange(H)).all())
    perm_t = torch.from_numpy(np.ascontiguousarray(perm)).long()
    groups, lay = [], []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        neurons = perm_t[s:e]
        lay += [neurons + k * H for k in range(3)]
        st = np.flatnonzero(m[:, perm[s]])
        groups.append((s, e, torch.from_numpy(st).long()))
    lay_t = torch.cat(lay)
    lay_out = None if bool((lay_t == torch.arange(3 * H)).all()) else lay_t

    def hsel_of(i: int):
        s, e = groups[i][:2]
        return slice(s, e) if identity else perm_t[s:e]

    active_groups: list[list[int]] = [[] for _ in range(T)]
    for gi, (_, _, st) in enumerate(groups):
        for t in st.tolist():
            active_groups[t].append(gi)
    steps = []
    view_steps: list[list[int]] = [[] for _ in groups]
    for t in range(T):
        ags = [groups[i] for i in active_groups[t]]
        if len(ags) <= MAX_BLOCKS:
            blocks = []
            for i in active_groups[t]:
                view_steps[i].append(t)
                blocks.append((slice(3 * groups[i][0], 3 * groups[i][1]), hsel_of(i), i))
            steps.append(blocks)
        else:
            wsel = [
                torch.arange(3 * s + k * (e - s), 3 * s + (k + 1) * (e - s))
                for k in range(3)
                for s, e, _ in ags
            ]
            hsel = [perm_t[s:e] for s, e, _ in ags]
            steps.append([(torch.cat(wsel), torch.cat(hsel), None)])
    # A group's packed rows are the steps where it is a block of its own (view steps).
    groups = [(s, e, torch.tensor(v, dtype=torch.long)) for (s, e, _), v in zip(groups, view_steps)]
    return Plan(lay=lay_out, steps=steps, groups=groups, all_active=bool(m.all()))


def compute_mask(g: torch.Tensor, active: torch.Tensor | None, lengths: torch.Tensor | None):
    """Full compute mask (same shape as g: active or open) and its time-only union."""
    act = g != 0 if active is None else (active | (g != 0))
    if lengths is None:
        union = act.any(0) if act.dim() == 3 else act
        return act, union
    T = g.shape[-2]
    valid = valid_mask(lengths.to(g.device), T)
    full = act if act.dim() == 3 else act[None].expand(valid.shape[0], -1, -1)
    union = (full & valid[:, :, None]).any(0)
    return act, union
