"""surnn/harness/checkpoint.py: a save replaces the file whole or not at all, an unreadable
checkpoint is one line naming it and the fix, a resume refuses another configuration, and
the RNG states round-trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from surnn.errors import ConfigError, HarnessError
from surnn.harness import checkpoint


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pt"
    checkpoint.save(path, {"step": 1})
    real = torch.save

    def dies_midway(obj, f):
        real(obj, f)
        with open(f, "r+b") as h:  # half written when the process dies
            h.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"step": 2})
    assert checkpoint.load(path) == {"step": 1}


def test_an_unreadable_checkpoint_is_one_line_naming_it_and_the_fix(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(HarnessError) as e:
        checkpoint.load(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and "delete it" in msg


def test_a_resume_refuses_another_configuration(tmp_path):
    path = tmp_path / "last.pt"
    best = {"step": 3, "metric": "loss", "value": 1.5}
    checkpoint.save(path, {"fingerprint": "abc", "best": best})
    assert checkpoint.load_last(path, "abc", tmp_path)["best"] == best
    assert checkpoint.load_last(path, "", tmp_path)["best"] == best  # no fingerprint: any
    with pytest.raises(ConfigError, match="different configuration"):
        checkpoint.load_last(path, "xyz", tmp_path)


def test_a_checkpoint_from_before_objectives_resumes_as_classification(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"fingerprint": "", "best": {"step": 4, "val_acc": 0.5}})
    assert checkpoint.load_last(path, "abc", tmp_path)["best"]["value"] == 0.5
    checkpoint.save(path, {"fingerprint": "", "best": {"step": -1, "val_acc": 0.0}})
    best = checkpoint.load_last(path, "abc", tmp_path)["best"]
    assert best["metric"] == "acc" and best["value"] is None  # nothing evaluated yet


def test_the_rng_states_round_trip():
    state = checkpoint.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2).tolist())
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == first
