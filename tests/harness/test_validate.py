"""Every config value checked before anything runs, key by key: a bad value is one
ConfigError line naming the key, the value and what is allowed."""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from surnn.errors import ConfigError, show
from surnn.harness.cli import CONFIG_DIR, choices, precheck
from surnn.harness.config import BackboneConfig, OptimConfig, TrainerConfig
from surnn.harness.validate import check_config
from tests.fixtures import run_py


def cfg_of(*overrides: str, tmp_path=None):
    base = ["logger=none"]
    if tmp_path is not None:
        base += [f"data_dir={tmp_path / 'data'}", f"output_dir={tmp_path / 'out'}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def rejects(*overrides: str, match: str, tmp_path=None, model=True) -> str:
    cfg = cfg_of(*overrides, tmp_path=tmp_path)
    with pytest.raises(ConfigError) as e:
        check_config(cfg, model=model)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert match in msg, msg
    return msg


def ruled(schema) -> set[str]:
    return {f.name for f in dataclasses.fields(schema) if "rule" in f.metadata}


def test_every_schema_key_has_a_rule():
    """A new trainer/optim/backbone key must say what values it takes (the name of a
    trainer preset is free; the mixer's name and options are checked by the registry and
    the mixer's constructor)."""
    assert {f.name for f in dataclasses.fields(TrainerConfig)} - {"name"} == ruled(TrainerConfig)
    assert {f.name for f in dataclasses.fields(OptimConfig)} == ruled(OptimConfig)
    assert {f.name for f in dataclasses.fields(BackboneConfig)} - {"name", "options"} == ruled(
        BackboneConfig
    )


def test_a_schema_made_directly_checks_its_keys_too():
    with pytest.raises(ConfigError, match=r"^trainer.grad_accum=0: expected an integer >= 1$"):
        TrainerConfig(grad_accum=0)
    with pytest.raises(ConfigError, match=r"^trainer.batch_size=10: must be divisible by"):
        TrainerConfig(batch_size=10, grad_accum=3)
    with pytest.raises(ConfigError, match=r"^optim.betas=\[0.9\]: expected two numbers"):
        OptimConfig(betas=[0.9])
    with pytest.raises(ConfigError, match=r"^model.pool='sum': expected one of mean, last, max"):
        BackboneConfig(name="lstm", pool="sum")
    TrainerConfig(batch_size=12, grad_accum=3).check_world(2)
    with pytest.raises(ConfigError, match=r"grad_accum \(3\) x 3 ranks"):
        TrainerConfig(batch_size=12, grad_accum=3).check_world(3)


BAD_TRAINER = [
    ("max_steps", "0"),
    ("max_steps", "-3"),
    ("batch_size", "0"),
    ("batch_size", "-4"),
    ("eval_batch_size", "0"),
    ("grad_accum", "0"),
    ("warmup_steps", "-1"),
    ("min_lr_ratio", "1.5"),
    ("min_lr_ratio", "-0.1"),
    ("clip_grad", "-1"),
    ("eval_every", "0"),
    ("ckpt_every", "0"),
    ("log_every", "0"),
    ("precision", "fp16"),
    ("num_workers", "-1"),
    ("max_train_examples", "0"),
    ("max_eval_examples", "0"),
]


@pytest.mark.parametrize(("key", "value"), BAD_TRAINER)
def test_bad_trainer_value(key, value):
    msg = rejects(f"trainer.{key}={value}", match=f"trainer.{key}=", model=False)
    assert "expected" in msg


def test_every_trainer_key_is_covered_by_a_bad_value():
    covered = {k for k, _ in BAD_TRAINER} | {"progress", "flops", "compile"}  # bools: typed
    assert covered == ruled(TrainerConfig)


@pytest.mark.parametrize("key", ["progress", "flops", "compile"])
def test_trainer_flags_take_booleans_only(key):
    with pytest.raises(ConfigError, match=f"trainer.{key}"):
        precheck([f"trainer.{key}=maybe", "logger=none"])


def test_grad_accum_must_divide_the_batch():
    msg = rejects("trainer.batch_size=10", "trainer.grad_accum=3", match="trainer.batch_size=10")
    assert "grad_accum (3)" in msg


def test_train_prefix_must_hold_a_batch():
    rejects("trainer.max_train_examples=8", "trainer.batch_size=32", match="max_train_examples=8")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", "-1"),
        ("lr", "0"),
        ("weight_decay", "-0.1"),
        ("betas", "[0.9]"),
        ("betas", "[0.9,1.5]"),
        ("eps", "0"),
        ("name", "sgd"),
    ],
)
def test_bad_optim_value(key, value):
    rejects(f"optim.{key}={value}", match=f"optim.{key}=", model=False)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("d_model", "0"),
        ("n_layers", "0"),
        ("ffn_mult", "-1"),
        ("dropout", "1.0"),
        ("dropout", "-0.2"),
        ("pool", "sum"),
        ("head_hidden", "0"),
        ("pos_emb", "rotary"),
    ],
)
def test_bad_backbone_value(key, value):
    rejects(f"model.{key}={value}", match=f"model.{key}=", model=False)


@pytest.mark.parametrize(  # choices and relations; ranges: test_a_bad_mixer_option_...
    ("model", "override", "match"),
    [
        ("surnn", "model.options.gate.kind=interval", None),  # valid: builds
        ("surnn", "model.options.gate.kind=sometimes", "model.options.gate.kind='sometimes'"),
        ("surnn", "model.options.impl=fast", "model.options.impl='fast'"),
        ("s4d", "model.options.d_state=7", "model.options.d_state=7"),
        ("s4d", "model.options.mode=fft", "model.options.mode='fft'"),
        ("transformer", "model.options.n_heads=5", "model.options.n_heads=5"),  # divides d_model?
    ],
)
def test_bad_model_option(model, override, match):
    cfg = cfg_of("task=listops", f"model={model}", "model.d_model=16", "model.n_layers=1", override)
    if match is None:
        check_config(cfg)
        return
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert match in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize(  # choices and types; ranges: test_a_bad_task_option_...
    ("task", "override", "match"),
    [
        ("image", "task.options.input=rgb", "task.options.input='rgb'"),
        ("smnist", "task.options.split_seed=1.5", "task.options.split_seed=1.5"),
        ("pathfinder", "task.options.resolution=48", "task.options.resolution=48"),
        ("pathfinder", "task.options.difficulty=extreme", "task.options.difficulty='extreme'"),
    ],
)
def test_bad_task_option(task, override, match):
    cfg = cfg_of(f"task={task}", "model=lstm", override)
    with pytest.raises(ConfigError) as e:
        check_config(cfg, model=False)
    assert match in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_top_level_values(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    rejects(f"data_dir={afile}", match="data_dir=", model=False)
    rejects(f"output_dir={afile}", match="output_dir=", model=False)
    rejects(f"data_dir={afile}/below", match="cannot be made", model=False)
    rejects("seed=-1", match="seed=-1", model=False)
    rejects("run_id=''", match="run_id=", model=False)
    rejects("run_id=../elsewhere", match="run_id=", model=False)
    rejects("device=tpu", match="device='tpu'", model=False)
    rejects("logger=wandb", "logger.mode=sometimes", match="logger.mode='sometimes'", model=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "taken").write_text("x")
    rejects(f"output_dir={tmp_path / 'out'}", "run_id=taken", match="is a file", model=False)


@pytest.mark.parametrize("exp", choices("experiment"))
def test_every_shipped_experiment_passes(exp):
    check_config(cfg_of(f"experiment={exp}"), model=False)


@pytest.mark.parametrize("task", choices("task"))
@pytest.mark.parametrize("model", [m for m in choices("model") if m != "_schema"])
def test_every_task_and_model_default_passes(task, model):
    check_config(cfg_of(f"task={task}", f"model={model}", "model.n_layers=1"), model=True)


@pytest.mark.parametrize(
    "override",
    [
        "trainer.clip_grad=0.5",
        "trainer.clip_grad=null",
        "trainer.clip_grad=0",
        "trainer.grad_accum=2",
        "trainer.precision=bf16",
        "trainer.compile=true",
        "trainer.eval_batch_size=7",
    ],
)
def test_every_trainer_key_is_valid_under_every_preset(override):
    """The key list is the schema's, not the chosen YAML file's."""
    for preset in choices("trainer"):
        if preset == "_schema":
            continue
        check_config(cfg_of(f"trainer={preset}", override), model=False)


# Every key the harness once checked by its name alone, anywhere under model.options or
# task.options, with a bad value, for each mixer or task that takes it: the constructor
# that owns the option rejects it, and the one line names its full path in the config.
MODEL_KEYS = [  # (model and its overrides, key, bad value)
    (["model=surnn"], "hidden_size", 0),
    (["model=gru"], "hidden_size", 0),
    (["model=lstm"], "hidden_size", -3),
    (["model=transformer"], "n_heads", 0),
    (["model=transformer"], "qkv_dim", 0),
    (["model=s4d"], "d_state", 1),
    (["model=surnn"], "gate.n_freqs", 0),
    (["model=surnn"], "gate.group_size", 0),
    (["model=surnn", "model.options.gate.kind=interval"], "gate.period", 0),
    (["model=s4d"], "dropout", 1.0),
    (["model=transformer"], "attn_dropout", 1.0),
    (["model=surnn"], "gate.lr", 0),
    (["model=surnn", "model.options.gate.kind=content"], "gate.lr", -1),
    (["model=s4d"], "lr_A", 0),
    (["model=s4d"], "lr_dt", -1),
    (["model=s4d"], "dt_min", 0),
    (["model=s4d"], "dt_max", 0),
    (["model=surnn"], "gate.period_min", 0),
    (["model=surnn"], "gate.period_max", -2),
    (["model=surnn"], "gate.width", 0),
    (["model=surnn", "model.options.gate.kind=soft"], "gate.temperature", 0),
    (["model=surnn"], "gate.amplitude", "loud"),
    (["model=surnn"], "gate.init_rate", 0),
    (["model=surnn", "model.options.gate.kind=content"], "gate.init_rate", 1.5),
    (["model=surnn"], "gate.target_rate", 1.5),
    (["model=surnn"], "gate.rate_penalty", -1),
    (["model=gru"], "bidirectional", 2),
    (["model=lstm"], "bidirectional", "yes"),
    (["model=s4d"], "bidirectional", 2),
    (["model=transformer"], "causal", "auto"),
    (["model=surnn"], "gate.learn_freqs", 2),
    (["model=hybrid"], "s4d.dropout", 1.0),  # a hybrid's layer: under model.options.<kind>
    (["model=hybrid"], "surnn.gate.init_rate", 2),
    (["model=hybrid"], "transformer.n_heads", 0),  # a block no layer uses: still checked
]
GENERATED = ["selective_copy", "copy_memory", "adding"]
PIXELS = ["image", "smnist", "psmnist", "scifar"]
TASK_KEYS = [  # (task, key, bad value)
    *[(t, "max_len", 0) for t in ("listops", "text", "retrieval", "wikitext2", "wikitext103")],
    ("retrieval", "doc_bytes", 0),
    *[(t, "val_size", 0) for t in PIXELS],
    ("text", "val_fraction", 1.0),
    *[(t, "split_seed", -1) for t in (*PIXELS, "text", "pathfinder", "pathx")],
    ("psmnist", "permutation_seed", -1),
    *[(t, "seed", -1) for t in GENERATED],
    ("listops", "generate.seed", -1),
    ("pathfinder", "generate.seed", -1),
    ("pathfinder", "generate.n", 0),
    *[(t, k, 0) for t in GENERATED for k in ("n_train", "n_val", "n_test")],
    *[("listops", f"generate.{k}", 0) for k in ("n_train", "n_val", "n_test")],
    ("listops", "generate.min_length", -1),
    ("listops", "generate.max_length", 0),
    ("listops", "generate.max_depth", 0),
    ("listops", "generate.max_args", 1),
    ("listops", "generate.workers", 0),
    ("pathfinder", "workers", 0),
    ("pathfinder", "generate.workers", -2),
    ("pathx", "workers", 0),
    ("listops", "append_eos", 3),
    *[(t, "hub", "yes") for t in (*PIXELS, "text", "wikitext2", "wikitext103")],
    ("pathfinder", "skip_unreadable", 3),
    ("pathx", "skip_unreadable", "no"),
]


@functools.cache
def _composed(*overrides: str):
    return cfg_of(*overrides)


def _rejected(overrides: tuple[str, ...], key: str, value, model: bool) -> str:
    cfg = copy.deepcopy(_composed(*overrides))
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ConfigError) as e:
        check_config(cfg, model=model)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{key}={show(value)}: "), msg
    return msg


@pytest.mark.parametrize(("models", "key", "value"), MODEL_KEYS)
def test_a_bad_mixer_option_is_one_line_naming_its_full_key(models, key, value):
    base = ("task=listops", "model.d_model=16", "model.n_layers=1", *models)
    _rejected(base, f"model.options.{key}", value, model=True)


@pytest.mark.parametrize(("task", "key", "value"), TASK_KEYS)
def test_a_bad_task_option_is_one_line_naming_its_full_key(task, key, value):
    _rejected((f"task={task}", "model=lstm"), f"task.options.{key}", value, model=False)


def test_a_bad_nested_option_ends_run_py_with_one_line_and_status_2(tmp_path):
    """run.py checks before Hydra makes anything: the layer's error, one line, exit 2."""
    p = run_py(
        [
            "task=listops",
            "model=surnn",
            "trainer=smoke",
            "logger=none",
            "run_id=bad",
            f"data_dir={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'out'}",
            "model.options.gate.init_rate=2",
        ],
        tmp_path,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [
        "error: model.options.gate.init_rate=2: expected a number in (0, 1]"
    ], p.stderr
    assert not (tmp_path / "out").exists()


def _rng_state():
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state()
    return (
        random.getstate(),
        (np_state[0], np_state[1].tolist(), *np_state[2:]),
        torch.get_rng_state(),
    )


def _same_rng(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1] and bool((a[2] == b[2]).all())


def test_the_model_precheck_hands_over_is_the_model_the_run_builds(tmp_path):
    """run.py's precheck builds the run's model from its seed and hands it to the run: the
    same weights, and the random state the run's own build leaves (so every number after
    it is the same); the caller's random state is left as it was."""
    import torch

    from surnn.harness.cli import prechecked
    from surnn.harness.validate import build_model, seed_everything

    overrides = ["task=listops", "model=hybrid", "model.n_layers=2", "trainer=smoke", "seed=3"]
    cfg = cfg_of(*overrides, tmp_path=tmp_path)
    torch.manual_seed(123)
    before = _rng_state()
    precheck(
        [*overrides, "logger=none", f"data_dir={cfg.data_dir}", f"output_dir={cfg.output_dir}"]
    )
    assert _same_rng(_rng_state(), before)
    checked = prechecked(cfg)
    assert checked is not None and checked.built is not None
    assert prechecked(cfg) is None  # taken once
    model = checked.built.take(3)
    after = _rng_state()

    seed_everything(3)
    ref = build_model(checked.task, checked.model)
    assert _same_rng(_rng_state(), after)
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_sweep_checks_each_job_once_and_hands_each_its_check(tmp_path, monkeypatch):
    """precheck of ``-m``: the first values' config is checked, then every job but the one
    of those values; each job's check waits for its run, which checks its own folder."""
    from surnn.harness import validate
    from surnn.harness.cli import prechecked

    calls = []
    real = validate.check_config

    def counted(cfg, *a, **kw):
        calls.append(int(cfg.seed))
        return real(cfg, *a, **kw)

    monkeypatch.setattr(validate, "check_config", counted)
    common = ["task=listops", "model=lstm", "trainer=smoke", "logger=none"]
    common += [f"data_dir={tmp_path / 'data'}", f"output_dir={tmp_path / 'out'}"]
    precheck(["-m", *common, "seed=4,5"])
    assert calls == [4, 5]  # seed=4: the first values', one check for its job too
    job = cfg_of(*common, "seed=5")
    job.run_id = "sweeps/x/1"  # a job names its own folder
    checked = prechecked(job, last=False)
    assert checked is not None and checked.built is None
    assert checked.reused(job).run_dir == tmp_path / "out" / "sweeps/x/1"
    job.run_id = "../elsewhere"
    with pytest.raises(ConfigError, match=r"^run_id='\.\./elsewhere': expected"):
        checked.reused(job)
    assert prechecked(cfg_of(*common, "seed=4")) is not None
    assert prechecked(cfg_of(*common, "seed=5")) is None  # dropped with the last
