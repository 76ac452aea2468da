"""surnn.harness.run_setting: the label a finished run carries when it is not in its task's
standard setting."""

from __future__ import annotations

from surnn.harness.results import RunResult
from surnn.harness.run_setting import scale_of, setting_of


def test_cpu_sized_presets_are_labelled_not_standard():
    """A run of a CPU-sized preset (the memory evidence) never reads as the standard
    setting, in tables or in the checkpoint benchmark."""
    cmd = "python run.py experiment=memory/copy_memory_cpu model=surnn seed=0"
    r = RunResult(task="copy_memory", command=cmd)
    assert setting_of(r, run_dir=None) == "CPU-sized preset (memory/copy_memory_cpu)"
    assert scale_of(r, run_dir=None) == "other"
    arm = RunResult(task="copy_memory", command="python run.py experiment=memory/copy/gru seed=1")
    assert setting_of(arm, run_dir=None) == "CPU-sized preset (memory/copy/gru)"
    std = RunResult(task="copy_memory", command="python run.py task=copy_memory model=surnn")
    assert setting_of(std, run_dir=None) is None and scale_of(std, run_dir=None) == "full"


def test_a_preset_that_extends_a_demo_preset_is_labelled_demo():
    """rate_control/t017 extends demo_listops: its runs read as demo, naming both presets,
    and a demo preset itself keeps its one-name label."""
    cmd = "python run.py seed=0 experiment=rate_control/t017 logger=none run_id=rate-t017-s0"
    r = RunResult(task="listops", command=cmd)
    assert setting_of(r, run_dir=None).startswith("demo (rate_control/t017, from demo_listops)")
    assert scale_of(r, run_dir=None) == "demo"
    own = RunResult(task="listops", command="python run.py experiment=demo_listops seed=0")
    assert setting_of(own, run_dir=None).startswith("demo (demo_listops)")
