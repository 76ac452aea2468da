"""Each config group mirrors one registry, and unknown names fail with the valid choices."""

from __future__ import annotations

import pytest

from surnn.errors import ConfigError
from surnn.harness.cli import check_overrides, choices
from surnn.harness.registry import MIXERS, TASKS


def test_model_configs_match_registered_mixers():
    assert set(choices("model")) == set(MIXERS.names(aliases=True))


def test_task_configs_match_registered_tasks():
    assert set(choices("task")) == set(TASKS.names(aliases=True))


def test_model_configs_name_their_mixer():
    from omegaconf import OmegaConf

    from surnn.harness.cli import CONFIG_DIR

    for name in choices("model"):
        cfg = OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml")
        if "name" in cfg:  # an alias config may inherit its name through defaults
            assert MIXERS.canonical(cfg.name) == MIXERS.canonical(name)


def test_unknown_names_list_valid_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'lstn'.*lstm.*Did you mean model=lstm"):
        MIXERS.get("lstn")
    with pytest.raises(ConfigError, match=r"unknown task 'nope'.*listops"):
        TASKS.get("nope")


def test_cli_precheck_covers_sweeps_and_groups():
    check_overrides(["task=listops", "model=surnn,lstm", "seed=0,1", "trainer.max_steps=3"])
    with pytest.raises(ConfigError, match=r"unknown model 'bogus'"):
        check_overrides(["model=surnn,bogus"])
    with pytest.raises(ConfigError, match=r"unknown trainer 'smok'.*Did you mean trainer=smoke"):
        check_overrides(["trainer=smok"])


def test_misspelt_keys_are_one_line_naming_the_closest_key():
    """Hydra reported a misspelt key over several lines and suggested appending it with +."""
    from surnn.harness.cli import check_keys

    check_keys(["task=listops", "model=surnn,lstm", "seed=0,1", "trainer.max_steps=3,4"])
    check_keys(["+trainer.extra=1", "hydra.launcher.partition=gpu", "experiment=demo_listops"])
    with pytest.raises(
        ConfigError, match=r"unknown key 'trainer.max_stepz'.*Did you mean trainer.max_steps\?"
    ):
        check_keys(["trainer=smoke", "trainer.max_stepz=5"])
    with pytest.raises(ConfigError, match=r"model.options.gate has no 'kindd'.*gate.kind\?"):
        check_keys(["model=surnn", "model.options.gate.kindd=soft,rhythm"])
    with pytest.raises(ConfigError, match=r"task.options has no 'permutation_seed'"):
        check_keys(["task=smnist", "task.options.permutation_seed=3"])
    check_keys(["task=psmnist", "task.options.permutation_seed=3"])
