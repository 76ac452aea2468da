"""Checkpoints that make a resumed run identical to an uninterrupted one.

``last.pt`` holds model, optimizer, scheduler, every RNG state, the sampler position and
the trainer's bookkeeping; ``best.pt`` holds the weights at the best validation step.
Writes go to a temporary file that is renamed into place, so a kill during a save
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surnn.errors import ConfigError, HarnessError


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise HarnessError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to start "
            "this run afresh, or use another run_id"
        ) from None


def load_last(path: Path, fingerprint: str, run_dir: Path) -> dict[str, Any]:
    """The ``last.pt`` of a run to resume. A run made with another configuration
    (``fingerprint``, when given) is an error; a checkpoint from before objectives gets
    the classification ``best`` (metric ``acc``)."""
    state = load(path)
    if fingerprint and state.get("fingerprint") not in ("", fingerprint):
        raise ConfigError(
            f"{run_dir} holds a run with a different configuration; rerun with the same "
            "overrides to resume it, or choose a new run_id"
        )
    best = state["best"]
    if "value" not in best:  # a checkpoint from before objectives: classification
        best = {**best, "metric": "acc", "value": best["val_acc"]}
        if best["step"] < 0:
            best["value"] = None
        state["best"] = best
    return state
