"""The common trainer: same loop, metrics and run folder for every model and task.

AdamW with parameter groups from optimizer hints, linear warmup + cosine decay, gradient
clipping and accumulation, bf16 autocast on GPU, DDP under torchrun, periodic validation,
test at the best-validation checkpoint over every example, exact resume from
``checkpoints/last.pt`` (also written on SIGTERM/SIGUSR1/SIGUSR2, for SLURM preemption;
the signal is then handed on, e.g. to submitit, which requeues the job).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Subset
from torchmetrics.classification import MulticlassAccuracy
from tqdm.auto import tqdm

from surnn.errors import ConfigError, TrainingError
from surnn.harness import checkpoint as ckpt
from surnn.harness.config import OptimConfig, TrainerConfig
from surnn.harness.data import ResumableBatchSampler, eval_loader, train_loader
from surnn.harness.flops import count_flops
from surnn.harness.loggers import Loggers
from surnn.harness.metrics import peak_memory_bytes

log = logging.getLogger(__name__)

# Per-layer rates mixers report in aux and the trainer averages: the fraction of
# (position, neuron) updates applied, and the fraction computed (open + near threshold).
RATE_KEYS = ("update_rate", "active_rate")


class _Preempted(Exception):
    """Raised inside evaluation when a stop signal arrives, to save and exit quickly."""


def param_groups(model: torch.nn.Module, ocfg: OptimConfig) -> list[dict[str, Any]]:
    """Group parameters by (lr, weight decay): optimizer hints on a parameter
    (``param._optim``) win; 1-D parameters (biases, norms) get no decay by default."""
    groups: dict[tuple[float, float], list] = defaultdict(list)
    seen = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        hints = getattr(p, "_optim", {})
        wd = ocfg.weight_decay
        if ocfg.no_decay_1d and p.ndim < 2:
            wd = 0.0
        wd = hints.get("weight_decay", wd)
        lr = hints.get("lr") or ocfg.lr
        groups[(float(lr), float(wd))].append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _floats(d: dict[str, Any]) -> dict[str, float]:
    """Tensors to Python floats (one host sync for the whole dict)."""
    if not d:
        return {}
    keys = list(d)
    vals = torch.stack([torch.as_tensor(d[k], dtype=torch.float64) for k in keys]).tolist()
    return dict(zip(keys, vals))


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    n = int(batch["lengths"].sum())
    if "lengths2" in batch:
        n += int(batch["lengths2"].sum())
    return n


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        task,
        splits,
        tcfg: TrainerConfig,
        ocfg: OptimConfig,
        run_dir: Path,
        loggers: Loggers,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        fingerprint: str = "",
    ):
        self.task, self.splits, self.tcfg, self.ocfg = task, splits, tcfg, ocfg
        self.run_dir, self.ckpt_dir = Path(run_dir), Path(run_dir) / "checkpoints"
        self.loggers, self.device, self.seed = loggers, device, seed
        self.rank, self.world, self.fingerprint = rank, world, fingerprint
        self.is_main = rank == 0

        if tcfg.batch_size % (tcfg.grad_accum * world):
            raise ConfigError(
                f"trainer.batch_size={tcfg.batch_size} must be divisible by trainer.grad_accum "
                f"({tcfg.grad_accum}) x world size ({world})"
            )
        self.micro_bs = tcfg.batch_size // (tcfg.grad_accum * world)
        if tcfg.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"trainer.precision={tcfg.precision!r}: expected auto, fp32 or bf16")
        self.amp = tcfg.precision == "bf16" or (tcfg.precision == "auto" and device.type == "cuda")

        self.model_raw = model.to(device)
        self.model = model
        if world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if tcfg.compile:
            self.model = torch.compile(self.model)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model_raw, ocfg), lr=ocfg.lr, betas=tuple(ocfg.betas), eps=ocfg.eps
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(s, tcfg.warmup_steps, tcfg.max_steps, tcfg.min_lr_ratio),
        )
        train = splits.train
        if tcfg.max_train_examples:
            train = Subset(train, list(range(min(len(train), tcfg.max_train_examples))))
        self.train_set = train

        # Bookkeeping saved in last.pt.
        self.step = 0
        self.batches_done = 0
        self.best = {"val_acc": -1.0, "step": -1, "val_loss": float("nan")}
        self.last_eval_step = -1
        self.timers = {"train_s": 0.0, "eval_s": 0.0, "tokens": 0}
        self.step_times: list[float] = []
        self.running: dict[str, float] = {}  # the progress bar's moving averages
        self._stop_signal: int | None = None
        self._warned_long = False
        # Where the step in progress started (RNG, batch count, tokens): a stop signal in
        # the middle of a long step abandons it and saves the state as of its start.
        self._interruptible = False
        self._step_start: dict[str, Any] | None = None

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model_raw.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "step": self.step,
            "batches_done": self.batches_done,
            "best": self.best,
            "last_eval_step": self.last_eval_step,
            "timers": self.timers,
            "step_times": self.step_times[-2000:],
            "running": self.running,
            "fingerprint": self.fingerprint,
        }

    def save_last(self) -> None:
        if self.is_main:
            ckpt.save(self.ckpt_dir / "last.pt", self._state())

    def try_resume(self) -> bool:
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            return False
        state = ckpt.load(path)
        if self.fingerprint and state.get("fingerprint") not in ("", self.fingerprint):
            raise ConfigError(
                f"{self.run_dir} holds a run with a different configuration; rerun with the same "
                "overrides to resume it, or choose a new run_id"
            )
        self.model_raw.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.step, self.batches_done = state["step"], state["batches_done"]
        self.best, self.last_eval_step = state["best"], state["last_eval_step"]
        self.timers, self.step_times = state["timers"], list(state["step_times"])
        self.running = dict(state.get("running", {}))
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum, frame) -> None:
        """Note the signal; inside a training step (one process) or an evaluation, stop
        at once: the step is abandoned before the optimizer touches the weights, and
        last.pt holds the state as of its start (a step of the main job on CPU takes
        ~16 s, so waiting for its end let SLURM's grace period run out)."""
        first = self._stop_signal is None
        self._stop_signal = signum
        if first and self.is_main:
            log.warning(
                "received %s at step %d: saving last.pt and stopping",
                signal.Signals(signum).name,
                self.step,
            )
        if self._interruptible and self.world == 1:
            self._interruptible = False
            raise _Preempted

    def _begin_step(self) -> None:
        self._step_start = {
            "rng": ckpt.rng_state(),
            "batches_done": self.batches_done,
            "tokens": self.timers["tokens"],
        }
        self._interruptible = True

    def _abandon_step(self) -> None:
        """Back to the start of the interrupted step (weights and optimizer are untouched
        until optimizer.step, which runs outside the interruptible part)."""
        self._interruptible = False
        snap = self._step_start
        if snap is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        ckpt.set_rng_state(snap["rng"])
        self.batches_done = snap["batches_done"]
        self.timers["tokens"] = snap["tokens"]
        self._step_start = None

    def _warn_if_long(self) -> None:
        """One warning when a CPU run is on course to take hours (the full LRA settings on
        a laptop): the estimate, and what to run instead. Checked after the first step
        (minus start-up, so at most a step's time into the run) and again after ten."""
        if self._warned_long or not self.step_times:
            return
        per_step = statistics.median(self.step_times[-5:])
        left_h = per_step * (self.tcfg.max_steps - self.step) / 3600
        if self.device.type == "cpu" and left_h > 2:
            self._warned_long = True
            log.warning(
                "this run needs about %.0f more hours on CPU (%.2f s/step x %d steps). The "
                "LRA settings are sized for a GPU; on CPU try `make demo` "
                "(experiment=demo_listops, ~7 min) or trainer=smoke, or cut trainer.max_steps.",
                left_h,
                per_step,
                self.tcfg.max_steps - self.step,
            )

    def _exit_for_signal(self) -> None:
        """Save last.pt, then hand the signal on (default action or, e.g., submitit's
        requeue handler)."""
        signum = self._stop_signal
        self._interruptible = False
        if self._step_start is not None:  # a step was cut short: save as of its start
            self._abandon_step()
        self.save_last()
        if self.is_main:
            log.warning("saved last.pt at step %d; exiting", self.step)
        self.loggers.close()
        signal.signal(signum, self._prev_handlers.get(signum, signal.SIG_DFL))
        signal.raise_signal(signum)
        raise SystemExit(128 + signum)

    # ------------------------------------------------------------------ loops

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, batch):
        with self._autocast():
            logits, aux = self.model(batch)
            loss = F.cross_entropy(logits.float(), batch["y"])
            aux_loss = aux.pop("aux_loss", None)
            total = loss if aux_loss is None else loss + aux_loss
        return logits, loss, total, aux

    def _train_step(self, it) -> dict[str, float]:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses, correct, count, rates = 0.0, 0, 0, {}
        self._begin_step()
        if self._stop_signal is not None:
            self._interruptible = False
            raise _Preempted
        for micro in range(self.tcfg.grad_accum):
            batch = _to(next(it), self.device)
            self.batches_done += 1
            sync = micro == self.tcfg.grad_accum - 1 or self.world == 1
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx:
                logits, loss, total, aux = self._forward(batch)
                (total / self.tcfg.grad_accum).backward()
            losses += float(loss.detach())
            correct += int((logits.argmax(-1) == batch["y"]).sum())
            count += len(batch["y"])
            self.timers["tokens"] += _tokens(batch)
            for k, v in aux.items():  # tensors: read once per step, below
                if k.endswith(RATE_KEYS):
                    rates[k] = rates.get(k, 0.0) + v.detach() / self.tcfg.grad_accum
        self._interruptible = False  # from here on the step completes: signals wait for its end
        loss = losses / self.tcfg.grad_accum
        bad = torch.tensor([0.0 if math.isfinite(loss) else 1.0], device=self.device)
        if self.world > 1:
            dist.all_reduce(bad)
        if bad.item() > 0:
            last = self.ckpt_dir / "last.pt"
            kept = (
                f"the last good checkpoint is {last} (step {self._last_saved_step})"
                if last.exists()
                else "no checkpoint had been saved yet"
            )
            fix = (
                f"Lower optim.lr or trainer.clip_grad (now {self.tcfg.clip_grad})"
                if self.tcfg.clip_grad
                else "Lower optim.lr or set trainer.clip_grad (e.g. 1.0)"
            )
            raise TrainingError(
                f"non-finite training loss ({loss}) at step {self.step + 1}; stopped before "
                f"updating the weights, {kept}. {fix}, or check the data."
            )
        if self.tcfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model_raw.parameters(), self.tcfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self._step_start = None
        return {"loss": loss, "acc": correct / max(count, 1), **_floats(rates)}

    @torch.no_grad()
    def evaluate(self, split: str, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """Accuracy and loss over every example of a split (no dropped partial batch)."""
        model = model or self.model_raw
        model.eval()
        ds = getattr(self.splits, split)
        if self.tcfg.max_eval_examples and len(ds) > self.tcfg.max_eval_examples:
            log.warning(
                "%s: evaluating the first %d of %d examples (trainer.max_eval_examples)",
                split,
                self.tcfg.max_eval_examples,
                len(ds),
            )
            ds = Subset(ds, list(range(self.tcfg.max_eval_examples)))
        bs = self.tcfg.eval_batch_size or self.micro_bs
        loader = eval_loader(
            ds, bs, self.splits.collate, self.tcfg.num_workers, self.rank, self.world
        )
        if self._stop_signal is not None:
            raise _Preempted
        self._interruptible = True  # evaluation changes no state: a signal may cut it
        try:
            return self._evaluate(split, loader, model)
        finally:
            self._interruptible = False

    def _evaluate(self, split: str, loader, model: torch.nn.Module) -> dict[str, Any]:
        acc = MulticlassAccuracy(num_classes=self.task.n_classes, average="micro").to(self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        n = torch.zeros((), dtype=torch.float64, device=self.device)
        hist = torch.zeros(self.task.n_classes, dtype=torch.float64, device=self.device)
        aux_sum: dict[str, torch.Tensor] = {}  # rates weighted by valid tokens
        tokens = torch.zeros((), dtype=torch.float64, device=self.device)
        for batch in loader:
            batch = _to(batch, self.device)
            with self._autocast():
                logits, aux = model(batch)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, batch["y"], reduction="sum").double()
            n += len(batch["y"])
            hist += torch.bincount(batch["y"], minlength=self.task.n_classes).double()
            acc.update(logits, batch["y"])
            n_tok = batch["lengths"].sum().double()
            if "lengths2" in batch:
                n_tok = n_tok + batch["lengths2"].sum().double()
            tokens += n_tok
            for k, v in aux.items():
                if k.endswith(RATE_KEYS):
                    aux_sum.setdefault(k, torch.zeros((), dtype=torch.float64, device=self.device))
                    aux_sum[k] += v.detach().double() * n_tok  # a mean over this batch's tokens
        self._interruptible = False
        if self.world > 1:  # every rank sums its share; the totals are global
            for t in (loss_sum, n, hist, tokens, *aux_sum.values()):
                dist.all_reduce(t)
        total = max(float(n), 1.0)
        out = {
            f"{split}/acc": float(acc.compute()),
            f"{split}/loss": float(loss_sum) / total,
            f"{split}/n": int(n),
            f"{split}/majority": float(hist.max()) / total,
        }
        n_tokens = max(float(tokens), 1.0)
        out.update({f"{split}/{k}": v / n_tokens for k, v in _floats(aux_sum).items()})
        return out

    def _maybe_eval(self, pbar) -> None:
        due = self.step > 0 and (
            self.step % self.tcfg.eval_every == 0 or self.step == self.tcfg.max_steps
        )
        if not due or self.last_eval_step == self.step:
            return
        t0 = time.perf_counter()
        res = self.evaluate("val")
        self.timers["eval_s"] += time.perf_counter() - t0
        self.last_eval_step = self.step
        if res["val/acc"] > self.best["val_acc"]:
            self.best = {"val_acc": res["val/acc"], "step": self.step, "val_loss": res["val/loss"]}
            if self.is_main:
                ckpt.save(
                    self.ckpt_dir / "best.pt",
                    {"model": self.model_raw.state_dict(), "step": self.step, "val": res},
                )
        res.update(
            {
                "step": self.step,
                "best/val_acc": self.best["val_acc"],
                "best/step": self.best["step"],
            }
        )
        res.update({f"sys/{k}": v for k, v in self.summary().items() if k != "peak_memory_kind"})
        self.loggers.log(res)
        if pbar is not None:
            pbar.write(
                f"step {self.step}: val acc {res['val/acc']:.4f} loss {res['val/loss']:.4f} "
                f"(best {self.best['val_acc']:.4f} @ {self.best['step']})"
            )
        log.info(
            "step %d val %s",
            self.step,
            {k: round(v, 4) for k, v in res.items() if isinstance(v, float)},
        )

    def fit(self) -> None:
        self._prev_handlers = {}
        for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            with contextlib.suppress(ValueError):  # not the main thread
                self._prev_handlers[s] = signal.signal(s, self._on_signal)
        self.try_resume()
        self._last_saved_step = self.step
        n_train = len(self.train_set)
        sampler = ResumableBatchSampler(
            n_train, self.micro_bs * self.world, self.seed, self.batches_done, self.rank, self.world
        )
        loader = train_loader(self.train_set, sampler, self.splits.collate, self.tcfg.num_workers)
        it = iter(loader)
        pbar = None
        if self.is_main and self.tcfg.progress:
            pbar = tqdm(
                total=self.tcfg.max_steps,
                initial=self.step,
                desc="train",
                dynamic_ncols=True,
                mininterval=1.0,
            )
        steps_here = 0
        try:
            self._maybe_eval(pbar)
            while self.step < self.tcfg.max_steps:
                t0 = time.perf_counter()
                m = self._train_step(it)
                dt = time.perf_counter() - t0
                self.timers["train_s"] += dt
                self.step_times.append(dt)
                steps_here += 1
                if steps_here in (1, 10) and self.is_main:
                    self._warn_if_long()
                # moving averages for the bar, kept in last.pt so a resumed run shows the
                # same numbers as an uninterrupted one
                self.running = {
                    k: 0.9 * self.running[k] + 0.1 * v if k in self.running else v
                    for k, v in m.items()
                }
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(
                        loss=f"{self.running['loss']:.3f}",
                        acc=f"{self.running['acc']:.3f}",
                        lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                    )
                if self.step % self.tcfg.log_every == 0 or self.step == self.tcfg.max_steps:
                    self.loggers.log(
                        {
                            "step": self.step,
                            **{f"train/{k}": v for k, v in m.items()},
                            "lr": self.scheduler.get_last_lr()[0],
                            "step_time_s": dt,
                        }
                    )
                self._maybe_eval(pbar)
                if self.step % self.tcfg.ckpt_every == 0 or self.step == self.tcfg.max_steps:
                    self.save_last()
                    self._last_saved_step = self.step
                if self._stop_signal is not None:
                    self._exit_for_signal()
        except _Preempted:
            self._exit_for_signal()
        finally:
            if pbar is not None:
                pbar.close()
            del it

    def test(self) -> dict[str, Any]:
        """Test at the best-validation weights (the last ones if no validation ran)."""
        best_path = self.ckpt_dir / "best.pt"
        if best_path.exists():
            self.model_raw.load_state_dict(ckpt.load(best_path)["model"])
        t0 = time.perf_counter()
        try:
            res = self.evaluate("test")
        except _Preempted:
            self._exit_for_signal()
        self.timers["eval_s"] += time.perf_counter() - t0
        return res

    def summary(self) -> dict[str, Any]:
        """Timings, throughput, memory and FLOPs for results.json."""
        out: dict[str, Any] = {
            "train_time_s": self.timers["train_s"],
            "eval_time_s": self.timers["eval_s"],
            "step_time_s": statistics.median(self.step_times) if self.step_times else None,
            "tokens_per_s": self.timers["tokens"] / self.timers["train_s"]
            if self.timers["train_s"]
            else None,
        }
        out["peak_memory_bytes"], out["peak_memory_kind"] = peak_memory_bytes(self.device)
        return out

    def flops(self) -> dict[str, Any]:
        """Forward FLOPs per sequence over the whole validation set (the examples
        ``trainer.max_eval_examples`` keeps, if set), executed and dense, for the whole
        model and for its sequence mixers alone; the rest always runs dense.

        Called after ``test`` so the model holds the best-validation weights: a learned
        gate's update rate, and so the executed FLOPs, change during training."""
        ds = self.splits.val
        if self.tcfg.max_eval_examples and len(ds) > self.tcfg.max_eval_examples:
            ds = Subset(ds, list(range(self.tcfg.max_eval_examples)))
        loader = eval_loader(ds, self.tcfg.eval_batch_size or self.micro_bs, self.splits.collate, 0)
        tot: dict[str, float] = defaultdict(float)
        n, tokens = 0, 0
        for batch in loader:
            batch = _to(batch, self.device)
            with self._autocast():
                for k, v in count_flops(self.model_raw, batch).items():
                    tot[k] += v
            n += len(batch["y"])
            tokens += int(batch["lengths"].sum())
        n = max(n, 1)
        return {
            "flops_per_seq": tot["executed"] / n,
            "flops_per_seq_dense": tot["dense"] / n,
            "mixer_flops_per_seq": tot["mixer_executed"] / n,
            "mixer_flops_per_seq_dense": tot["mixer_dense"] / n,
            "flops_examples": n,
            "flops_split": "val",
            "flops_mean_len": tokens / n,
            "flops_always_dense": "embedding, feed-forward, norms, pooling, head",
        }
