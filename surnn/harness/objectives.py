"""What a model is trained to predict, and how it is scored: one class per objective.

A task declares ``objective`` (``Task.objective``):

- ``classify``: one class per sequence (``y: [B]``), from the pooled encoding. Metrics:
  accuracy, loss, majority-class rate. Selection metric: ``acc`` (higher is better).
- ``tokens``: a class at chosen positions (``y: [B, L]``, ``IGNORE_INDEX`` where there is
  no target), from each position's encoding. Metrics: per-token accuracy (``acc``),
  whole-sequence accuracy (``seq_acc``: every target of the sequence right), the accuracy
  of each sequence's k-th target (``acc_pos<k>``, for the first ``Tokens.N_POS`` targets:
  which of the recalled symbols a model gets right), loss. Selection: ``acc``.
- ``lm``: causal language modelling: every position predicts the next token (``y: [B, L]``,
  the input shifted by one, ``IGNORE_INDEX`` at padding). Metrics: loss (nats per token),
  ``ppl`` = exp(loss), ``bpt`` = loss / ln 2 (bits per token), ``acc`` (next-token
  accuracy). Selection: ``loss`` (lower is better). With cutoffs the head is an adaptive
  softmax (``torch.nn.AdaptiveLogSoftmaxWithLoss``; class ids must be sorted by frequency).
- ``regress``: a real target per sequence (``y: [B]`` float), read at the last valid
  position; loss and metric: mean squared error ``mse`` (lower is better).

Each objective builds its head, gives the training loss and scores an evaluation with
torchmetrics metrics (``surnn/harness/metrics.py``): summed over every example of the split,
across DDP ranks when computed.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from surnn.errors import ConfigError
from surnn.harness import metrics as tm

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
OBJECTIVES = ("classify", "tokens", "lm", "regress")
#: objectives whose outputs are one per position (no pooling)
PER_POSITION = ("tokens", "lm")


class Objective:
    name = "objective"
    metric = "acc"  # the selection metric
    higher_is_better = True
    per_position = False

    def __init__(self, n_classes: int | None = None):
        self.n_classes = n_classes

    def head(self, d_in: int) -> nn.Module:
        return nn.Linear(d_in, self.n_classes)

    def outputs(self, head: nn.Module, h: torch.Tensor, y: torch.Tensor | None) -> Any:
        """The model's output from its encoding ``h`` (pooled [B, D] or per position
        [B, L, D]): logits or predictions; the LM also needs the targets ``y``."""
        return head(h)

    def loss(self, out: Any, y: torch.Tensor) -> torch.Tensor:
        """The mean training loss of one micro-batch."""
        raise NotImplementedError

    def train_stats(self, out: Any, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(correct, count) for the running train accuracy of one micro-batch."""
        return torch.zeros(()), 0

    # ---- evaluation
    def metrics(self) -> MetricCollection:
        """The evaluation's metrics, fresh (``update`` feeds them a batch)."""
        raise NotImplementedError

    def update(self, metrics: MetricCollection, out: Any, y: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self, metrics: MetricCollection) -> dict[str, float]:
        """The split's numbers, over every example (and every rank)."""
        raise NotImplementedError

    def better(self, a: float, b: float | None) -> bool:
        """Is metric value a better than b (None or NaN: nothing yet)?"""
        if b is None or (isinstance(b, float) and math.isnan(b)):
            return True
        return a > b if self.higher_is_better else a < b

    def tokens(self, y: torch.Tensor) -> int:
        """Scored targets in a batch (sequences, or scored positions)."""
        return int(y.shape[0])


def _collection(**metrics) -> MetricCollection:
    return MetricCollection(metrics, compute_groups=False)


def _values(metrics: MetricCollection) -> dict[str, Any]:
    """Each metric's value over every example and rank: a float, or a list for a vector."""
    return {k: v.tolist() if v.dim() else v.item() for k, v in metrics.compute().items()}


class Classify(Objective):
    name = "classify"

    def loss(self, out, y):
        return F.cross_entropy(out.float(), y)

    def train_stats(self, out, y):
        return (out.argmax(-1) == y).sum(), len(y)

    def metrics(self):
        return _collection(
            acc=tm.Accuracy(),
            loss=tm.MeanNLL(),
            n=tm.count(),
            majority=tm.ClassPrior(self.n_classes),
        )

    def update(self, metrics, out, y):
        logits = out.float()
        metrics["acc"].update(logits.argmax(-1), y)
        metrics["loss"].update(F.cross_entropy(logits, y, reduction="sum"), len(y))
        metrics["n"].update(len(y))
        metrics["majority"].update(y)

    def compute(self, metrics):
        v = _values(metrics)
        return {"acc": v["acc"], "loss": v["loss"], "n": int(v["n"]), "majority": v["majority"]}


class Tokens(Objective):
    """Classes at chosen positions: ``y [B, L]`` with ``IGNORE_INDEX`` elsewhere; the
    output is the logits at every position, ``[B, L, C]``."""

    name = "tokens"
    per_position = True
    #: per-target accuracy is kept for each sequence's first N_POS targets
    N_POS = 32

    def loss(self, out, y):
        return F.cross_entropy(out.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)

    def train_stats(self, out, y):
        keep = y != IGNORE_INDEX
        return ((out.argmax(-1) == y) & keep).sum(), int(keep.sum())

    def metrics(self):
        return _collection(
            acc=tm.Accuracy(),
            seq_acc=tm.SequenceAccuracy(),
            acc_pos=tm.PositionAccuracy(self.N_POS),
            loss=tm.MeanNLL(),
            n=tm.count(),  # sequences with a target
            targets=tm.count(),
        )

    def update(self, metrics, out, y):
        keep = y != IGNORE_INDEX
        logits = out.float()
        pred = logits.argmax(-1)
        n = keep.sum()
        metrics["acc"].update(pred, y, keep)
        metrics["seq_acc"].update(pred, y, keep)
        metrics["acc_pos"].update(pred, y, keep)
        nll = F.cross_entropy(
            logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        metrics["loss"].update(nll, n)
        metrics["n"].update(keep.any(1).sum())
        metrics["targets"].update(n)

    def compute(self, metrics):
        v = _values(metrics)
        out = {
            "acc": v["acc"],
            "seq_acc": v["seq_acc"],
            "loss": v["loss"],
            "n": int(v["n"]),
            "targets": int(v["targets"]),
        }
        out.update({f"acc_pos{k}": a for k, a in enumerate(v["acc_pos"]) if not math.isnan(a)})
        return out

    def tokens(self, y):
        return int((y != IGNORE_INDEX).sum())


class LanguageModel(Objective):
    """Next-token prediction at every valid position. The output is a dict over the scored
    positions (flattened): ``nll`` (negative log-likelihood of each target) and ``pred``
    (the most likely token; not computed in training with an adaptive softmax)."""

    name = "lm"
    metric = "loss"
    higher_is_better = False
    per_position = True

    def __init__(self, n_classes: int, cutoffs=None, div_value: float = 4.0):
        super().__init__(n_classes)
        cut = sorted({int(c) for c in (cutoffs or []) if 0 < int(c) < n_classes})
        self.cutoffs, self.div_value = cut, float(div_value)

    def head(self, d_in):
        if self.cutoffs:
            div = self.div_value
            if d_in // div ** len(self.cutoffs) < 1:  # a tail cluster would be 0 wide
                div = d_in ** (1.0 / len(self.cutoffs)) * (1 - 1e-6)
                log.warning(
                    "adaptive softmax: d_model %d is too narrow for div_value %g over %d tail "
                    "clusters; using div_value %.3g",
                    d_in,
                    self.div_value,
                    len(self.cutoffs),
                    div,
                )
            return nn.AdaptiveLogSoftmaxWithLoss(d_in, self.n_classes, self.cutoffs, div_value=div)
        return nn.Linear(d_in, self.n_classes)

    def outputs(self, head, h, y):
        keep = y != IGNORE_INDEX
        hk, t = h[keep], y[keep]
        if isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
            with torch.autocast(h.device.type, enabled=False):
                nll = -head(hk.float(), t).output
                pred = None if torch.is_grad_enabled() else head.predict(hk.float())
            return {"nll": nll, "pred": pred}
        logits = head(hk).float()
        nll = F.cross_entropy(logits, t, reduction="none")
        return {"nll": nll, "pred": logits.argmax(-1).detach()}

    def loss(self, out, y):
        nll = out["nll"]
        return nll.mean() if nll.numel() else nll.sum()

    def train_stats(self, out, y):
        if out["pred"] is None:
            return torch.zeros(()), 0
        return (out["pred"] == y[y != IGNORE_INDEX]).sum(), int(out["pred"].numel())

    def metrics(self):
        return _collection(
            loss=tm.MeanNLL(), ppl=tm.Perplexity(), acc=tm.Accuracy(), targets=tm.count()
        )

    def update(self, metrics, out, y):
        t = y[y != IGNORE_INDEX]
        metrics["loss"].update(out["nll"], len(t))
        metrics["ppl"].update(out["nll"], len(t))
        metrics["acc"].update(out["pred"], t)
        metrics["targets"].update(len(t))

    def compute(self, metrics):
        v = _values(metrics)
        n = int(v["targets"])
        loss = v["loss"]
        return {
            "loss": loss,
            "ppl": v["ppl"],
            "bpt": loss / math.log(2),
            "acc": v["acc"],
            "n": n,
            "targets": n,
        }

    def tokens(self, y):
        return int((y != IGNORE_INDEX).sum())


class Regress(Objective):
    """A real target per sequence (``y [B]`` or ``[B, n_targets]``), mean squared error."""

    name = "regress"
    metric = "mse"
    higher_is_better = False

    def __init__(self, n_targets: int = 1):
        super().__init__(None)
        self.n_targets = int(n_targets)

    def head(self, d_in):
        return nn.Linear(d_in, self.n_targets)

    def outputs(self, head, h, y):
        p = head(h).float()
        return p.squeeze(-1) if self.n_targets == 1 else p

    def loss(self, out, y):
        return F.mse_loss(out.float(), y.float())

    def metrics(self):
        # baseline_mse: what always predicting the split's mean target scores
        return _collection(mse=tm.mse(), baseline_mse=tm.TargetVariance(), n=tm.count())

    def update(self, metrics, out, y):
        metrics["mse"].update(out.float(), y.float())
        metrics["baseline_mse"].update(y)
        metrics["n"].update(y.numel())

    def compute(self, metrics):
        v = _values(metrics)
        return {
            "mse": v["mse"],
            "loss": v["mse"],
            "baseline_mse": v["baseline_mse"],
            "n": int(v["n"]),
        }


def build_objective(task) -> Objective:
    """The objective a task declares (``task.objective``, default classify)."""
    name = getattr(task, "objective", "classify")
    if name == "classify":
        return Classify(task.n_classes)
    if name == "tokens":
        return Tokens(task.n_classes)
    if name == "lm":
        return LanguageModel(
            task.n_classes,
            getattr(task, "adaptive_cutoffs", None),
            getattr(task, "adaptive_div_value", 4.0),
        )
    if name == "regress":
        return Regress(getattr(task, "n_targets", 1))
    raise ConfigError(
        f"task={task.name}: objective={name!r}; expected one of {', '.join(OBJECTIVES)}"
    )
