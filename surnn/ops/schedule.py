"""Turn a time-only compute mask into a plan the fast paths can execute cheaply.

When the active sets are already a few contiguous runs of neurons (slab schedules, e.g.
the interval gate whose phase classes are contiguous), the plan keeps the neuron order
and every active slab's weights and state are views. Otherwise the weight rows are
reordered once (lexicographic order of the neurons' open/closed patterns over time, so
neurons sharing a pattern sit together and their weights are a contiguous slab), while
the state stays in the original order and is gathered / scattered per step. Steps whose
active set is still fragmented gather weight rows with ``index_select``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_RUNS = 4  # more contiguous runs than this in a step -> gather rows instead
MAX_GROUPS = 64  # more distinct neuron patterns than this -> per-step weight gradients


@dataclass
class Plan:
    """perm[j] = original neuron at weight position j. steps[t] is a list of blocks
    (wsel, hsel): wsel selects weight rows in permuted order, hsel the same neurons in
    the state (original order); each is a slice (a view) or a LongTensor (a gather).
    groups: (start, end, steps) for neurons sharing a pattern, or None when too many."""

    perm: torch.Tensor
    identity: bool
    inv_perm: torch.Tensor
    steps: list
    groups: list | None
    n_active: int  # sum over t of active neurons (time-only count)
    all_active: bool


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate(([0], row.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), ends.tolist()))


def make_plan(mask: torch.Tensor, reorder: bool = True) -> Plan:
    """mask: [T, H] bool (time-only compute mask) -> Plan."""
    m = mask.detach().to("cpu", torch.bool).numpy()
    T, H = m.shape

    def n_groups(mm: np.ndarray) -> int:
        return 1 + int((mm.T[1:] != mm.T[:-1]).any(1).sum()) if H else 0

    runs0 = [_runs(m[t]) for t in range(T)]
    keep = all(len(r) <= MAX_RUNS for r in runs0) and n_groups(m) <= MAX_GROUPS
    if reorder and T > 0 and not keep:
        packed = np.packbits(m.T, axis=1)  # [H, ceil(T/8)]: each neuron's pattern
        perm_np = np.lexsort(packed.T[::-1]) if packed.shape[1] else np.arange(H)
    else:
        perm_np = np.arange(H)
    mp = m[:, perm_np]
    identity = bool((perm_np == np.arange(H)).all())
    perm_t = torch.from_numpy(np.ascontiguousarray(perm_np)).long()
    steps: list = []
    for t in range(T):
        runs = runs0[t] if identity else _runs(mp[t])
        if len(runs) <= MAX_RUNS:
            blocks = []
            for s, e in runs:
                hsel = slice(s, e) if identity else perm_t[s:e]
                blocks.append((slice(s, e), hsel))
        else:
            idx = torch.from_numpy(np.flatnonzero(mp[t])).long()
            blocks = [(idx, idx if identity else perm_t[idx])]
        steps.append(blocks)
    groups = None
    if T > 0 and H > 0:
        cols = mp.T  # [H, T], identical patterns now adjacent
        change = np.flatnonzero((cols[1:] != cols[:-1]).any(1)) + 1
        bounds = np.concatenate(([0], change, [H]))
        if len(bounds) - 1 <= MAX_GROUPS:
            groups = []
            for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                st = np.flatnonzero(cols[s])
                if len(st):
                    groups.append((s, e, torch.from_numpy(st).long()))
    return Plan(
        perm=perm_t,
        inv_perm=torch.argsort(perm_t),
        identity=identity,
        steps=steps,
        groups=groups,
        n_active=int(m.sum()),
        all_active=bool(m.all()),
    )
