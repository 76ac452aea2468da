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

Each objective builds its head, gives the training loss and keeps the sums an evaluation
needs (summed over every example, all-reduced under DDP, then ``compute``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from surnn.errors import ConfigError

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

    # ---- evaluation sums
    def init(self, device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def update(self, s: dict[str, torch.Tensor], out: Any, y: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self, s: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def better(self, a: float, b: float | None) -> bool:
        """Is metric value a better than b (None or NaN: nothing yet)?"""
        if b is None or (isinstance(b, float) and math.isnan(b)):
            return True
        return a > b if self.higher_is_better else a < b

    def tokens(self, y: torch.Tensor) -> int:
        """Scored targets in a batch (sequences, or scored positions)."""
        return int(y.shape[0])


def _zeros(device, *names):
    return {n: torch.zeros((), dtype=torch.float64, device=device) for n in names}


class Classify(Objective):
    name = "classify"

    def loss(self, out, y):
        return F.cross_entropy(out.float(), y)

    def train_stats(self, out, y):
        return (out.argmax(-1) == y).sum(), len(y)

    def init(self, device):
        s = _zeros(device, "loss", "n", "correct")
        s["hist"] = torch.zeros(self.n_classes, dtype=torch.float64, device=device)
        return s

    def update(self, s, out, y):
        logits = out.float()
        s["loss"] += F.cross_entropy(logits, y, reduction="sum").double()
        s["n"] += len(y)
        s["correct"] += (logits.argmax(-1) == y).sum().double()
        s["hist"] += torch.bincount(y, minlength=self.n_classes).double()

    def compute(self, s):
        n = max(float(s["n"]), 1.0)
        return {
            "acc": float(s["correct"]) / n,
            "loss": float(s["loss"]) / n,
            "n": int(s["n"]),
            "majority": float(s["hist"].max()) / n,
        }


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

    def init(self, device):
        s = _zeros(device, "loss", "n", "correct", "seqs", "seqs_right")
        for name in ("pos_n", "pos_right"):
            s[name] = torch.zeros(self.N_POS, dtype=torch.float64, device=device)
        return s

    def update(self, s, out, y):
        keep = y != IGNORE_INDEX
        logits = out.float()
        right = (logits.argmax(-1) == y) & keep
        s["loss"] += F.cross_entropy(
            logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).double()
        s["n"] += keep.sum().double()
        s["correct"] += right.sum().double()
        has = keep.any(1)
        s["seqs"] += has.sum().double()
        s["seqs_right"] += (has & ((right | ~keep).all(1))).sum().double()
        rank = keep.long().cumsum(1) - 1  # the k of each target within its sequence
        first = keep & (rank < self.N_POS)
        k = rank[first]
        s["pos_n"] += torch.bincount(k, minlength=self.N_POS).double()
        s["pos_right"] += torch.bincount(k, weights=right[first].double(), minlength=self.N_POS)

    def compute(self, s):
        n = max(float(s["n"]), 1.0)
        out = {
            "acc": float(s["correct"]) / n,
            "seq_acc": float(s["seqs_right"]) / max(float(s["seqs"]), 1.0),
            "loss": float(s["loss"]) / n,
            "n": int(s["seqs"]),
            "targets": int(s["n"]),
        }
        counts, rights = s["pos_n"].tolist(), s["pos_right"].tolist()
        for k, (c, r) in enumerate(zip(counts, rights)):
            if c:
                out[f"acc_pos{k}"] = r / c
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

    def init(self, device):
        return _zeros(device, "loss", "n", "correct")

    def update(self, s, out, y):
        t = y[y != IGNORE_INDEX]
        s["loss"] += out["nll"].double().sum()
        s["n"] += len(t)
        s["correct"] += (out["pred"] == t).sum().double()

    def compute(self, s):
        n = max(float(s["n"]), 1.0)
        loss = float(s["loss"]) / n
        return {
            "loss": loss,
            "ppl": math.exp(min(loss, 700.0)),
            "bpt": loss / math.log(2),
            "acc": float(s["correct"]) / n,
            "n": int(s["n"]),
            "targets": int(s["n"]),
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

    def init(self, device):
        return _zeros(device, "sse", "n", "y_sum", "y_sq")

    def update(self, s, out, y):
        yf = y.float()
        s["sse"] += ((out.float() - yf) ** 2).sum().double()
        s["n"] += yf.numel()
        s["y_sum"] += yf.sum().double()
        s["y_sq"] += (yf.double() ** 2).sum()

    def compute(self, s):
        n = max(float(s["n"]), 1.0)
        mse = float(s["sse"]) / n
        var = float(s["y_sq"]) / n - (float(s["y_sum"]) / n) ** 2
        return {
            "mse": mse,
            "loss": mse,
            # what always predicting the split's mean target scores (the trivial baseline)
            "baseline_mse": max(var, 0.0),
            "n": int(s["n"]),
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
