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

import ctypes
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

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


def _groups(cols: torch.Tensor) -> torch.Tensor:
    """Boundaries of runs of identical adjacent rows of cols [H, T] (bool)."""
    H = cols.shape[0]
    change = torch.nonzero((cols[1:] != cols[:-1]).any(1)).flatten() + 1
    return torch.cat([torch.zeros(1, dtype=torch.long), change, torch.tensor([H])])


def _gather_plan(m: torch.Tensor) -> Plan:
    T, H = m.shape
    counts = m.sum(1)
    starts = torch.cumsum(counts, 0) - counts
    t_of, cols = torch.nonzero(m, as_tuple=True)  # row-major: step by step, neurons in order
    # Step t's weight rows [cols_t, cols_t + H, cols_t + 2H] at [3*start_t, 3*end_t).
    local = torch.arange(len(cols)) - starts[t_of]
    wall = torch.empty(3 * len(cols), dtype=torch.long)
    for k in range(3):
        wall[3 * starts[t_of] + k * counts[t_of] + local] = cols + k * H
    steps = []
    for c, s in zip(counts.tolist(), starts.tolist()):
        if c == H:
            steps.append([(slice(0, 3 * H), slice(0, H), None)])
        elif c:
            steps.append([(wall[3 * s : 3 * (s + c)], cols[s : s + c], None)])
        else:
            steps.append([])
    return Plan(lay=None, steps=steps, groups=None, all_active=bool(m.all()))


_CACHE: OrderedDict[tuple, Plan] = OrderedDict()
_CACHE_SIZE = 16  # plans of recent masks (evaluation reuses each layer's fixed schedule)


def _digest(m: torch.Tensor) -> bytes:
    """A hash of a contiguous CPU bool tensor's bytes (read in place, no copy)."""
    buf = (ctypes.c_char * m.numel()).from_address(m.data_ptr())
    return hashlib.blake2b(buf, digest_size=16).digest()


def make_plan(mask: torch.Tensor) -> Plan:
    """mask: [T, H] bool (time-only compute mask) -> Plan (cached by the mask's content)."""
    m = mask.detach().to("cpu", torch.bool).contiguous()
    key = (tuple(m.shape), MAX_BLOCKS, MAX_GROUPS, _digest(m))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    plan = _make_plan(m)
    _CACHE[key] = plan
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return plan


def _make_plan(m: torch.Tensor) -> Plan:
    T, H = m.shape
    if T == 0 or H == 0:
        return _gather_plan(m)
    perm = torch.arange(H)
    cols = m.T.contiguous()  # [H, T]: each neuron's pattern over time
    bounds = _groups(cols)
    if len(bounds) - 1 > MAX_GROUPS:
        # Sort the neurons by pattern (lexicographic, stable): equal patterns become
        # adjacent, so each distinct pattern is one contiguous group.
        _, inverse = torch.unique(cols, dim=0, sorted=True, return_inverse=True)
        perm = torch.sort(inverse, stable=True).indices
        bounds = _groups(cols[perm])
        if len(bounds) - 1 > MAX_GROUPS:
            return _gather_plan(m)
    identity = bool((perm == torch.arange(H)).all())
    groups, lay = [], []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        neurons = perm[s:e]
        lay += [neurons + k * H for k in range(3)]
        st = torch.nonzero(cols[perm[s]]).flatten()
        groups.append((s, e, st))
    lay_t = torch.cat(lay)
    lay_out = None if bool((lay_t == torch.arange(3 * H)).all()) else lay_t

    def hsel_of(i: int):
        s, e = groups[i][:2]
        return slice(s, e) if identity else perm[s:e]

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
            hsel = [perm[s:e] for s, e, _ in ags]
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
