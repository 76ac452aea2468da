"""A finished run's results.json as one typed record: ``RunResult``.

``surnn.harness.run.train`` builds it and writes it with ``save``; the scripts that read runs
(tables, figures, the reruns of ``scripts/check_results.py``, a run's setting) load it with
``RunResult.load`` and read its fields. The fields are the file's keys, in the file's order,
with two exceptions:

- ``test_metric`` is written under ``test_<metric_name>`` (``test_acc``, ``test_mse``; for a
  language model, whose metric is the loss, it is the ``test_loss`` key itself);
- the classification fields are written only for the ``classify`` objective, and the FLOPs
  fields only when the run counted FLOPs (``trainer.flops``).

Files written before a key existed (no ``kernel``, ``gate_holders`` or ``data``) and committed
copies that leave a machine-local key out load with that field None, and ``omitted`` names the
keys they lack, so ``to_json`` writes such a file back as it was. Keys this record does not
know land in ``extra`` and are written after the known ones: nothing read is dropped.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLASSIFY_FIELDS = ("best_val_acc", "test_majority_class")
FLOPS_FIELDS = (
    "flops_per_seq",
    "flops_per_seq_dense",
    "mixer_flops_per_seq",
    "mixer_flops_per_seq_dense",
    "flops_per_layer",
    "flops_per_layer_dense",
    "layer_kinds",
    "flops_examples",
    "flops_split",
    "flops_mean_len",
    "flops_always_dense",
)
NOT_IN_FILE = ("omitted", "extra", "path")  # the record's own bookkeeping


@dataclass(kw_only=True)
class RunResult:
    """One run's outcome and provenance (results.json). Every field is None when a file
    lacks its key; rates and accuracies are fractions in [0, 1]."""

    # what ran
    task: str | None = None  # task name (task=...)
    model: str | None = None  # model name (model=...)
    seed: int | None = None  # the run's seed
    run_id: str | None = None  # the run's folder name under output_dir
    steps: int | None = None  # optimizer steps trained
    objective: str | None = None  # classify, tokens, lm or regress
    metric_name: str | None = None  # the selection metric: acc, loss, mse
    metric_higher_is_better: bool | None = None  # whether a larger metric is better
    # outcome
    best_val_metric: float | None = None  # validation metric at the best validation step
    best_val_loss: float | None = None  # validation loss (nats per target) at that step
    best_step: int | None = None  # the best validation step (its weights are tested)
    test_metric: float | None = None  # test metric at best_step; key test_<metric_name>
    test_metrics: dict[str, float] | None = None  # every test metric by name (no per-layer)
    test_loss: float | None = None  # test loss (nats per target)
    test_examples: int | None = None  # test examples scored
    carry_state: bool | None = None  # LM streams: state carried across windows (else None)
    update_rate: dict[str, float] | None = None  # test updates computed per layer (layerK)
    active_rate: dict[str, float] | None = None  # test neurons active per layer (layerK)
    gate_holders: dict[str, float] | None = None  # neurons holding state per layer, or None
    params: int | None = None  # trainable parameters
    # timings and memory (measured on the machine named by device)
    train_time_s: float | None = None  # seconds of training, evaluation excluded
    eval_time_s: float | None = None  # seconds of evaluation
    step_time_s: float | None = None  # median seconds per training step
    tokens_per_s: float | None = None  # training tokens per second
    peak_memory_bytes: int | None = None  # peak memory in bytes (see peak_memory_kind)
    peak_memory_kind: str | None = None  # cuda_max_allocated or process_max_rss
    # provenance
    device: str | None = None  # the device in words (CPU: with its thread count)
    threads: int | None = None  # torch CPU threads
    world_size: int | None = None  # processes (DDP ranks)
    precision: str | None = None  # fp32 or bf16
    kernel: str | None = None  # the su_gru implementation(s) run; None: no suRNN layer
    git_commit: str | None = None  # commit at the start (-dirty: uncommitted changes)
    torch: str | None = None  # torch version
    date: str | None = None  # end of the run, ISO 8601
    variant: str | None = None  # ablation label (default: its model.* overrides), or None
    command: str | None = None  # the command that reruns this run alone
    data: dict[str, Any] | None = None  # the task's description of its data (task.describe)
    split_sizes: dict[str, int] | None = None  # examples per split (train, val, test)
    # classify objective only
    best_val_acc: float | None = None  # validation accuracy at best_step
    test_majority_class: float | None = None  # test accuracy of always the commonest class
    # only when FLOPs were counted: forward FLOPs per sequence over the validation set
    flops_per_seq: float | None = None  # executed (skipped updates not counted)
    flops_per_seq_dense: float | None = None  # with every gate open
    mixer_flops_per_seq: float | None = None  # executed, sequence mixers alone
    mixer_flops_per_seq_dense: float | None = None  # dense, sequence mixers alone
    flops_per_layer: dict[str, float] | None = None  # executed per mixer layer
    flops_per_layer_dense: dict[str, float] | None = None  # dense per mixer layer
    layer_kinds: dict[str, str] | None = None  # each layer's mixer kind
    flops_examples: int | None = None  # sequences counted
    flops_split: str | None = None  # the split counted (val)
    flops_mean_len: float | None = None  # mean valid tokens per counted sequence
    flops_always_dense: str | None = None  # the parts that always run dense
    # bookkeeping, not keys of the file
    omitted: frozenset[str] = frozenset()  # keys this record does not write (a file lacked them)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a file this record lacks
    path: Path | None = None  # the file it was loaded from

    @property
    def test_metric_key(self) -> str:
        """The key of ``test_metric`` (files from before ``metric_name`` hold accuracy)."""
        return f"test_{self.metric_name or 'acc'}"

    @property
    def test_acc(self) -> float | None:
        """Test accuracy when accuracy is the run's metric (classify, tokens), else None."""
        return self.test_metric if (self.metric_name or "acc") == "acc" else None

    @property
    def run_dir(self) -> Path | None:
        """The folder of the file it was loaded from (a run folder for a results.json)."""
        return self.path.parent if self.path is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The file's content: its keys in order."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            name = f.name
            if name in NOT_IN_FILE:
                continue
            if name in CLASSIFY_FIELDS and self.objective != "classify":
                continue
            if name in FLOPS_FIELDS and self.flops_per_seq is None:
                continue
            key = self.test_metric_key if name == "test_metric" else name
            if key not in self.omitted:
                out[key] = getattr(self, name)  # test_loss: the lm metric's key, kept in place
        return {**out, **self.extra}

    def keys(self) -> list[str]:
        return list(self.to_dict())

    def has(self, key: str) -> bool:
        """Whether the file holds ``key``."""
        return key in self.to_dict()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any], path: str | Path | None = None) -> RunResult:
        """The record of a results.json's content ``d`` (today's keys or an older file's)."""
        known = {f.name for f in dataclasses.fields(cls)} - set(NOT_IN_FILE) - {"test_metric"}
        values = {k: v for k, v in d.items() if k in known}
        r = cls(**values, path=Path(path) if path is not None else None)
        if r.test_metric_key in d:
            r.test_metric = d[r.test_metric_key]
        r.extra = {k: v for k, v in d.items() if k not in known and k != r.test_metric_key}
        r.omitted = frozenset(k for k in r.to_dict() if k not in d)
        return r

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Read a results.json (json.JSONDecodeError when it is not JSON)."""
        return cls.from_json(json.loads(Path(path).read_text()), path)
