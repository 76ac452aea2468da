"""Evaluation-side measuring: the objective's metrics over every example of a split (no
dropped partial batch; a stream: every token, with the state carried across its windows),
the mixers' per-layer rates weighted by valid tokens, gate statistics where the task says
where its information sits (``memory_windows``: neurons open at the input and closed through
the delay), and forward FLOPs per sequence over the validation set. The metrics are torchmetrics
metrics (the objective's, and a weighted mean per rate): under DDP each rank reads its share
and torchmetrics sums the states of every rank when they are computed.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import Any

import torch
from torch.utils.data import Subset

from surnn.harness.config import TrainerConfig
from surnn.harness.data import eval_loader, to_device
from surnn.harness.flops import count_flops
from surnn.harness.metrics import WeightedMean
from surnn.harness.preemption import StopSignals
from surnn.harness.streams import detached_rows, eval_windows, is_stream

# The trainer's warnings, under the trainer's name as before they moved here.
log = logging.getLogger("surnn.harness.trainer")

# Per-layer rates mixers report in aux and the trainer averages: the fraction of
# (position, neuron) updates applied, and the fraction computed (open + near threshold).
RATE_KEYS = ("update_rate", "active_rate")


def floats(d: dict[str, Any]) -> dict[str, float]:
    """Tensors to Python floats (one host sync for the whole dict)."""
    if not d:
        return {}
    keys = list(d)
    vals = torch.stack([torch.as_tensor(d[k], dtype=torch.float64) for k in keys]).tolist()
    return dict(zip(keys, vals))


class Evaluator:
    """Evaluation and FLOP counting over a task's splits, for the trainer that made it.

    ``autocast`` is the trainer's precision context; ``signals`` its stop signals, which
    may cut an evaluation short (``Preempted``: evaluation changes no state)."""

    def __init__(
        self,
        task,
        splits,
        tcfg: TrainerConfig,
        objective,
        device: torch.device,
        micro_bs: int,
        signals: StopSignals,
        autocast=contextlib.nullcontext,
        rank: int = 0,
        world: int = 1,
    ):
        self.task, self.splits, self.tcfg, self.objective = task, splits, tcfg, objective
        self.device, self.micro_bs, self.signals, self.autocast = (
            device,
            micro_bs,
            signals,
            autocast,
        )
        self.rank, self.world = rank, world

    def batches(self, split: str, ds):
        """Every example of ``ds`` on this rank; streams: windows in order, with ``rows``
        (the rows of the batch, whose state carries over from the previous window)."""
        bs = self.tcfg.eval_batch_size or self.micro_bs
        if not is_stream(ds):
            loader = eval_loader(
                ds, bs, self.splits.collate, self.tcfg.num_workers, self.rank, self.world
            )
            yield from loader
            return
        yield from eval_windows(
            split, ds, self.task.max_len, bs, self.tcfg.max_eval_examples, self.rank, self.world
        )

    @torch.no_grad()
    def evaluate(self, split: str, model: torch.nn.Module, carry: bool) -> dict[str, Any]:
        """The objective's metrics over every example of a split, ``split/<metric>``, and
        the per-layer rates; ``carry``: carry the state across a stream's windows."""
        model.eval()
        ds = getattr(self.splits, split)
        if (
            not is_stream(ds)
            and self.tcfg.max_eval_examples
            and len(ds) > self.tcfg.max_eval_examples
        ):
            log.warning(
                "%s: evaluating the first %d of %d examples (trainer.max_eval_examples)",
                split,
                self.tcfg.max_eval_examples,
                len(ds),
            )
            ds = Subset(ds, list(range(self.tcfg.max_eval_examples)))
        self.signals.check()
        self.signals.interruptible = True  # evaluation changes no state: a signal may cut it
        try:
            return self._evaluate(split, ds, model, carry)
        finally:
            self.signals.interruptible = False

    def _evaluate(self, split: str, ds, model: torch.nn.Module, carry: bool) -> dict[str, Any]:
        obj = self.objective
        metrics = obj.metrics().to(self.device)
        rates: dict[str, WeightedMean] = {}  # each rate's mean over the valid tokens
        state = None
        batches = self.batches(split, ds)
        while (batch := self.signals.fetch(batches)) is not None:  # never cut in the loader
            rows = batch.pop("rows", None)
            batch = to_device(batch, self.device)
            with self.autocast():
                if carry:
                    if state is not None and len(rows) < len(state[0]["h"]):
                        state = detached_rows(
                            state, torch.arange(len(rows))
                        )  # a ragged last window
                    out, aux, state = model(batch, state, carry=True)
                else:
                    out, aux = model(batch)
            obj.update(metrics, out, batch["y"])
            n_tok = batch["lengths"].sum().double()
            if "lengths2" in batch:
                n_tok = n_tok + batch["lengths2"].sum().double()
            for k, v in aux.items():
                if k.endswith(RATE_KEYS):  # a mean over this batch's tokens
                    if k not in rates:
                        rates[k] = WeightedMean().to(self.device)
                    rates[k].update(v.detach(), n_tok)
        self.signals.interruptible = False
        out = {f"{split}/{k}": v for k, v in obj.compute(metrics).items()}
        rate_values = floats({k: m.compute() for k, m in rates.items()})
        out.update({f"{split}/{k}": v for k, v in rate_values.items()})
        windows = getattr(self.task, "memory_windows", None)  # a memory task's layout
        if windows and hasattr(model, "gate_stats"):
            stats = model.gate_stats(self.task.max_len, windows)
            out.update({f"{split}/{k}": v for k, v in stats.items()})
        return out

    def flops(self, model: torch.nn.Module) -> dict[str, Any]:
        """Forward FLOPs per sequence over the whole validation set (the examples
        ``trainer.max_eval_examples`` keeps, if set), executed and dense, for the whole
        model and for its sequence mixers alone; the rest always runs dense."""
        ds = self.splits.val
        if is_stream(ds):  # windows in order (max_eval_examples windows in smoke runs)
            batches = self.batches("val", ds)
        else:
            if self.tcfg.max_eval_examples and len(ds) > self.tcfg.max_eval_examples:
                ds = Subset(ds, list(range(self.tcfg.max_eval_examples)))
            bs = self.tcfg.eval_batch_size or self.micro_bs
            batches = eval_loader(ds, bs, self.splits.collate, 0)
        tot: dict[str, float] = defaultdict(float)
        layers: dict[str, dict[str, float]] = {"layers": {}, "layers_dense": {}}
        n, tokens = 0, 0
        for batch in batches:
            batch.pop("rows", None)
            batch = to_device(batch, self.device)
            with self.autocast():
                c = count_flops(model, batch)
            for k, v in c.items():
                if isinstance(v, dict):
                    for name, f in v.items():
                        layers[k][name] = layers[k].get(name, 0.0) + f
                else:
                    tot[k] += v
            n += len(batch["x"])
            tokens += int(batch["lengths"].sum())
        n = max(n, 1)
        kinds = getattr(model, "layer_kinds", None) or []
        return {
            "flops_per_seq": tot["executed"] / n,
            "flops_per_seq_dense": tot["dense"] / n,
            "mixer_flops_per_seq": tot["mixer_executed"] / n,
            "mixer_flops_per_seq_dense": tot["mixer_dense"] / n,
            "flops_per_layer": {k: v / n for k, v in layers["layers"].items()},
            "flops_per_layer_dense": {k: v / n for k, v in layers["layers_dense"].items()},
            "layer_kinds": {f"layer{i}": k for i, k in enumerate(kinds)},
            "flops_examples": n,
            "flops_split": "val",
            "flops_mean_len": tokens / n,
            "flops_always_dense": "embedding, feed-forward, norms, pooling, head",
        }
