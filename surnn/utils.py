"""Small helpers of the method that the harness and the baselines use too."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn


def valid_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """[B, L] bool, True at valid (non-padding) positions of right-padded sequences."""
    return torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]


def closes_nothing(lengths: torch.Tensor | None, T: int) -> bool:
    """True when ``lengths`` (CPU) close no step of a length-T batch (a batch of one, no
    padding): callers then run the cheaper unpadded paths. Lengths on another device, or
    under a torch.compile trace, count as closing something, so that this check never
    waits on the device nor breaks a graph."""
    if lengths is None or lengths.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return lengths.numel() == 0 or int(lengths.min()) >= T  # min: 2 us; (>= T).all(): 4


def optim_hint(param: nn.Parameter, lr: float | None = None, weight_decay: float | None = None):
    """Attach optimizer hints (own learning rate, weight decay) to a parameter; a trainer
    that reads ``param._optim`` turns them into parameter groups. Returns the parameter."""
    hints = dict(getattr(param, "_optim", {}))
    if lr is not None:
        hints["lr"] = lr
    if weight_decay is not None:
        hints["weight_decay"] = weight_decay
    param._optim = hints
    return param


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (made, with its folder, if missing) across
    processes and DDP ranks: held while the block runs, dropped by the kernel if the process
    dies. Whoever waited on it finds the work done (a compiled kernel, a data cache)."""
    import fcntl  # POSIX; imported here so that ``import surnn`` needs it only to lock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# callback -> the handles of its registration hooks, once installed
_WATCHERS: dict = {}


def on_registration(callback) -> None:
    """Call ``callback(module, name, value)`` whenever a parameter, buffer or submodule is
    assigned to any module (nn.Module's global registration hooks; a checkpoint loaded with
    ``assign=True`` too). Installed once per callback: what caches built from a module's
    tensors use to forget them when one is replaced."""
    if callback in _WATCHERS:
        return
    mm = nn.modules.module
    _WATCHERS[callback] = [
        register(callback)
        for register in (
            mm.register_module_parameter_registration_hook,
            mm.register_module_buffer_registration_hook,
            mm.register_module_module_registration_hook,
        )
    ]
