"""Evaluation metrics (torchmetrics), and what a run records of its timing, memory and command
(the commit, device and date come from ``surnn.provenance``)."""

from __future__ import annotations

import math
import resource
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torchmetrics import MeanSquaredError, Metric
from torchmetrics.aggregation import SumMetric

from surnn.provenance import command_line


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """Peak memory and what it measures (CUDA allocator peak, or process peak RSS)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "process_max_rss"


def run_summary(timers: dict[str, float], step_times: list[float], device) -> dict[str, Any]:
    """Timings, throughput and peak memory of a run, for results.json: ``timers`` holds
    the seconds of training (``train_s``) and evaluation (``eval_s``) and the tokens
    trained on; ``step_times`` the seconds of each step."""
    out: dict[str, Any] = {
        "train_time_s": timers["train_s"],
        "eval_time_s": timers["eval_s"],
        "step_time_s": statistics.median(step_times) if step_times else None,
        "tokens_per_s": timers["tokens"] / timers["train_s"] if timers["train_s"] else None,
    }
    out["peak_memory_bytes"], out["peak_memory_kind"] = peak_memory_bytes(device)
    return out


def multirun_job_command(overrides: dict[str, str] | None = None, world: int = 1) -> str | None:
    """In a job of a Hydra multirun, the command that reruns that one job alone: run.py
    with the job's own overrides (the sweep's command line names every job, and a
    submitit job's process is submitit's), with ``overrides`` set (run.py sets the job's
    ``run_id``, its folder, so the command reruns and resumes it there), under
    ``torchrun --nproc_per_node=<world>`` for a job of several processes. run.py is named
    as seen from the working folder. None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    overrides = overrides or {}
    job = [
        o
        for o in HydraConfig.get().overrides.task
        if o.split("=", 1)[0].lstrip("+~") not in overrides
    ]
    job += [f"{k}={v}" for k, v in overrides.items()]
    alone = command_line(Path(__file__).resolve().parents[2] / "run.py", job)  # python run.py
    return alone if world == 1 else f"torchrun --nproc_per_node={world}" + alone[len("python") :]


def run_command() -> str:
    """The command of this run: in a job of a Hydra multirun the job's own (as if run
    alone), else the command that started the process (``surnn.provenance.command_line``)."""
    return multirun_job_command() or command_line()


# ------------------------------------------------------------------ evaluation metrics
# torchmetrics metrics whose states are float64 sums over every example (counts exact), summed
# across DDP ranks by torchmetrics when computed. The objectives (objectives.py) and the
# evaluation's per-layer rates (evaluation.py) are scored with them.


class _Sums(Metric):
    """States: float64 sums (scalars, or vectors of ``size``), summed across ranks."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, *names: str, size: int | None = None):
        super().__init__()
        for name in names:
            zeros = torch.zeros(() if size is None else (size,), dtype=torch.float64)
            self.add_state(name, default=zeros, dist_reduce_fx="sum")


class Accuracy(_Sums):
    """Fraction of the scored targets predicted right: ``update(pred, target, keep)`` with
    predicted and true classes of one shape; ``keep`` (bool, that shape) marks the targets
    that count (default: all)."""

    higher_is_better = True

    def __init__(self):
        super().__init__("right", "total")

    def update(self, pred: torch.Tensor, target: torch.Tensor, keep=None) -> None:
        right = pred == target
        if keep is None:
            self.right += right.sum()
            self.total += right.numel()
        else:
            self.right += (right & keep).sum()
            self.total += keep.sum()

    def compute(self) -> torch.Tensor:
        return self.right / self.total.clamp(min=1)


class SequenceAccuracy(_Sums):
    """Whole-sequence accuracy: the fraction of sequences with every scored target right.
    ``update(pred, target, keep)``: ``[B, L]`` each; a sequence with no target counts
    nowhere."""

    higher_is_better = True

    def __init__(self):
        super().__init__("right", "total")

    def update(self, pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> None:
        has = keep.any(1)
        self.total += has.sum()
        self.right += (has & ((pred == target) | ~keep).all(1)).sum()

    def compute(self) -> torch.Tensor:
        return self.right / self.total.clamp(min=1)


class PositionAccuracy(_Sums):
    """The accuracy of each sequence's k-th scored target, for k < ``n``: which of the
    recalled symbols a model gets right. ``update(pred, target, keep)``: ``[B, L]`` each;
    ``compute()``: ``[n]``, NaN where no sequence has a k-th target."""

    higher_is_better = True

    def __init__(self, n: int):
        super().__init__("right", "total", size=n)
        self.n = n

    def update(self, pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> None:
        rank = keep.long().cumsum(1) - 1  # the k of each target within its sequence
        first = keep & (rank < self.n)
        k = rank[first]
        self.total += torch.bincount(k, minlength=self.n)
        right = (pred == target)[first].double()
        self.right += torch.bincount(k, weights=right, minlength=self.n)

    def compute(self) -> torch.Tensor:
        return self.right / self.total


class MeanNLL(_Sums):
    """Mean negative log-likelihood per scored target (nats), the cross-entropy loss:
    ``update(nll, n)``: the batch's per-target values, or their sum, and the number of
    targets."""

    higher_is_better = False

    def __init__(self):
        super().__init__("total", "count")

    def update(self, nll: torch.Tensor, n) -> None:
        self.total += nll.double().sum()
        self.count += n

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


class Perplexity(MeanNLL):
    """exp(mean NLL per target), the mean capped at 700 nats (float64's exp overflows past
    about 709); computed by ``math.exp``, as the harness reports it."""

    def compute(self) -> torch.Tensor:
        mean = float(self.total / self.count.clamp(min=1))
        return torch.tensor(math.exp(min(mean, 700.0)), dtype=torch.float64)


class ClassPrior(_Sums):
    """The majority class's share of the targets (``update(target)``, classes < ``n``): the
    accuracy of always answering the most frequent class."""

    def __init__(self, n: int):
        super().__init__("count", size=n)
        self.n = n

    def update(self, target: torch.Tensor) -> None:
        self.count += torch.bincount(target, minlength=self.n)

    def compute(self) -> torch.Tensor:
        return self.count.max() / self.count.sum().clamp(min=1)


class TargetVariance(_Sums):
    """The variance of real targets (``update(target)``): the mean squared error of always
    predicting their mean, the trivial baseline of a regression."""

    higher_is_better = False

    def __init__(self):
        super().__init__("total", "total_sq", "count")

    def update(self, target: torch.Tensor) -> None:
        y = target.float()
        self.total += y.sum().double()
        self.total_sq += (y.double() ** 2).sum()
        self.count += y.numel()

    def compute(self) -> torch.Tensor:
        n = self.count.clamp(min=1)
        return (self.total_sq / n - (self.total / n) ** 2).clamp(min=0.0)


def count() -> SumMetric:
    """A float64 running count (``update(n)``), summed across ranks."""
    return SumMetric(nan_strategy="disable").set_dtype(torch.float64)


def mse() -> MeanSquaredError:
    """Mean squared error with float64 sums."""
    return MeanSquaredError().set_dtype(torch.float64)


class WeightedMean(_Sums):
    """A weighted mean, ``update(value, weight)``: the evaluation's per-layer rates, each
    batch's weighted by its valid tokens. (torchmetrics' MeanMetric drops the weights when
    its NaN check is off, and its check reads each value back from the device.)"""

    def __init__(self):
        super().__init__("total", "weight")

    def update(self, value: torch.Tensor, weight: torch.Tensor) -> None:
        self.total += value.double() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight.clamp(min=1)
