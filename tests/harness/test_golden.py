"""Golden runs: a few seconds of training per model kind, whose outcome is committed
(tests/harness/golden.json) and compared exactly, so a change of numerics fails here.

Training on CPU is deterministic for a given torch, CPU instruction set, thread count and
kernel; the goldens hold one profile of outcomes per such environment they were made in
(AVX2 and AVX-512 machines, say) and are compared where one holds (elsewhere the test is
skipped, saying why). A change that moves these numbers on purpose regenerates them, and
the committed results, in the same merge:

    SURNN_UPDATE_GOLDENS=1 python -m pytest tests/harness/test_golden.py
    python scripts/check_results.py --update results/demo results/memory/runs ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from surnn.harness.results import RunResult
from tests.fixtures import TINY_LISTOPS, load_script, train_here

GOLDEN = Path(__file__).with_name("golden.json")
REGENERATE = "SURNN_UPDATE_GOLDENS=1 python -m pytest tests/harness/test_golden.py"
UPDATE = os.environ.get("SURNN_UPDATE_GOLDENS", "") not in ("", "0")
KINDS = {
    "surnn": [],
    "gru": [],
    "lstm": [],
    "s4d": [],
    "transformer": [],
    "hybrid": ["model.n_layers=2"],  # suRNN then S4D
}
SETTING = ["task=listops", "trainer=smoke", "logger=none", "seed=0", *TINY_LISTOPS]
EXTRA_FIELDS = ("kernel", "test_metrics", "flops_per_layer")


def environment() -> dict:
    from surnn.ops import compiled

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": 1,
        "compiled_kernel": bool(compiled.available()),
    }


def outcome(res: RunResult) -> dict:
    fields = (*load_script("check_results").COMPARED, *EXTRA_FIELDS)
    saved = res.to_dict()  # the values as results.json holds them
    return {k: saved[k] for k in fields if k in saved}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("golden-data")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_kind(kind: str, data_dir: Path, out: Path, prechecked: bool = False) -> RunResult:
    """The golden run of one model kind, in this process (through harness.run.train,
    as run.py runs it; ``prechecked``: from the check and model of run.py's precheck)."""
    overrides = [*SETTING, f"model={kind}", *KINDS[kind], f"data_dir={data_dir}"]
    return train_here(overrides, out, f"golden-{kind}", prechecked=prechecked)


def load_goldens() -> dict:
    """golden.json: the setting, the kinds, and one profile per environment the goldens
    were made in (``profiles``: a list of {environment, runs}); a file holding a single
    environment at its top level reads as one profile."""
    committed = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if "environment" in committed:
        one = {"environment": committed.pop("environment"), "runs": committed.pop("runs", {})}
        committed["profiles"] = [one]
    committed.setdefault("profiles", [])
    return committed


def profile_for(committed: dict, env: dict) -> dict | None:
    return next((p for p in committed["profiles"] if p["environment"] == env), None)


@pytest.mark.parametrize("kind", list(KINDS))
def test_golden_run_gives_the_committed_numbers(kind, data_dir, tmp_path, one_thread):
    committed = load_goldens()
    env = environment()
    profile = profile_for(committed, env)
    if not UPDATE and profile is None:
        made = [p["environment"] for p in committed["profiles"]]
        pytest.skip(
            f"the goldens were made with {made}, this is {env}: rerun where one matches, or "
            f"add this environment's ({REGENERATE})"
        )
    got = outcome(run_kind(kind, data_dir, tmp_path))
    if UPDATE:  # this environment's profile; the others are kept
        if (committed.get("setting"), committed.get("kinds")) != (SETTING, KINDS):
            committed["profiles"] = []  # another setting: every profile is stale
        committed.update({"regenerate": REGENERATE, "setting": SETTING, "kinds": KINDS})
        if profile_for(committed, env) is None:
            committed["profiles"].append({"environment": env, "runs": {}})
        profile_for(committed, env)["runs"][kind] = got
        GOLDEN.write_text(json.dumps(committed, indent=1, sort_keys=True) + "\n")
        return
    want = profile["runs"][kind]
    diff = [
        f"{k}: committed {want.get(k)!r} / now {got.get(k)!r}"
        for k in sorted(set(want) | set(got))
        if want.get(k) != got.get(k)
    ]
    assert not diff, (
        f"golden run {kind!r} gives other numbers than {GOLDEN.name} in {env} "
        f"({'; '.join(diff)}). If the numerics changed on purpose, regenerate the goldens "
        f"({REGENERATE}, on each machine kind it holds) and the committed results "
        "(python scripts/check_results.py --update <folders>) in the same merge."
    )


def test_goldens_hold_one_profile_per_environment_and_every_kind():
    """Each environment appears once, and each profile has a run of every kind."""
    committed = load_goldens()
    envs = [json.dumps(p["environment"], sort_keys=True) for p in committed["profiles"]]
    assert envs and len(envs) == len(set(envs)), envs
    for p in committed["profiles"]:
        assert sorted(p["runs"]) == sorted(KINDS), p["environment"]


def test_a_run_from_the_prechecked_model_gives_the_committed_numbers(
    data_dir, tmp_path, one_thread
):
    """run.py's run trains the model its precheck built from the seed (a hybrid: suRNN and
    S4D layers): the numbers of a model built in the run."""
    if UPDATE:
        pytest.skip("the goldens are made by the runs that build their own model")
    env = environment()
    profile = profile_for(load_goldens(), env)
    if profile is None:
        pytest.skip(f"no goldens were made in {env} ({REGENERATE})")
    want = profile["runs"]["hybrid"]
    got = outcome(run_kind("hybrid", data_dir, tmp_path, prechecked=True))
    assert got == want, sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
