"""Golden runs: a few seconds of training per model kind, whose outcome is committed
(tests/harness/golden.json) and compared exactly, so a change of numerics fails here.

Training on CPU is deterministic for a given torch, CPU instruction set, thread count and
kernel; the goldens record those and are compared where they hold (elsewhere the test is
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


def run_kind(kind: str, data_dir: Path, out: Path) -> RunResult:
    """The golden run of one model kind, in this process (through harness.run.train,
    as run.py runs it)."""
    overrides = [*SETTING, f"model={kind}", *KINDS[kind], f"data_dir={data_dir}"]
    return train_here(overrides, out, f"golden-{kind}")


@pytest.mark.parametrize("kind", list(KINDS))
def test_golden_run_gives_the_committed_numbers(kind, data_dir, tmp_path, one_thread):
    committed = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    env = environment()
    if not UPDATE and committed.get("environment") != env:
        pytest.skip(
            f"the goldens were made with {committed.get('environment')}, this is {env}: "
            f"rerun where they match, or regenerate them here ({REGENERATE})"
        )
    got = outcome(run_kind(kind, data_dir, tmp_path))
    if UPDATE:
        committed.update(
            {"regenerate": REGENERATE, "environment": env, "setting": SETTING, "kinds": KINDS}
        )
        committed.setdefault("runs", {})[kind] = got
        GOLDEN.write_text(json.dumps(committed, indent=1, sort_keys=True) + "\n")
        return
    want = committed["runs"][kind]
    diff = [
        f"{k}: committed {want.get(k)!r} / now {got.get(k)!r}"
        for k in sorted(set(want) | set(got))
        if want.get(k) != got.get(k)
    ]
    assert not diff, (
        f"golden run {kind!r} gives other numbers than {GOLDEN.name} ({'; '.join(diff)}). "
        f"If the numerics changed on purpose, regenerate the goldens ({REGENERATE}) and the "
        "committed results (python scripts/check_results.py --update <folders>) in the same "
        "merge."
    )
