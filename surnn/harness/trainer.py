"""The common trainer: same loop, metrics and run folder for every model and task.

AdamW with parameter groups from optimizer hints, linear warmup + cosine decay, gradient
clipping and accumulation, bf16 autocast on GPU, DDP under torchrun, periodic validation,
test at the best-validation checkpoint over every example, exact resume from
``checkpoints/last.pt`` (also written on SIGTERM/SIGUSR1/SIGUSR2, for SLURM preemption;
the signal is then handed on, e.g. to submitit, which requeues the job).

Its parts: optim.py (parameter groups, schedule), data.py (batching), streams.py
(language-model streams in windows, state carried), evaluation.py (metrics over a split,
FLOPs), preemption.py (stop signals), resume.py (saving last.pt, resuming from it, stopping
at a signal), checkpoint.py (the files), metrics.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Subset
from tqdm.auto import tqdm

from surnn.errors import TrainingError
from surnn.harness import checkpoint as ckpt
from surnn.harness.config import OptimConfig, TrainerConfig
from surnn.harness.data import to_device, train_batches
from surnn.harness.evaluation import RATE_KEYS, Evaluator, floats
from surnn.harness.loggers import Loggers
from surnn.harness.metrics import run_summary
from surnn.harness.optim import param_groups, warmup_cosine
from surnn.harness.preemption import Preempted, StopSignals
from surnn.harness.resume import Resumable
from surnn.harness.streams import Prefix, carry_state, detached_rows, is_stream, train_windows

log = logging.getLogger(__name__)


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    n = int(batch["lengths"].sum())
    if "lengths2" in batch:
        n += int(batch["lengths2"].sum())
    return n


class Trainer(Resumable):
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
        resume_command: str | None = None,
    ):
        self.task, self.splits, self.tcfg, self.ocfg = task, splits, tcfg, ocfg
        self.objective = getattr(model, "objective", None)
        if self.objective is None:
            from surnn.harness.objectives import Classify

            self.objective = Classify(task.n_classes)
        self.run_dir, self.ckpt_dir = Path(run_dir), Path(run_dir) / "checkpoints"
        self.loggers, self.device, self.seed = loggers, device, seed
        self.rank, self.world, self.fingerprint = rank, world, fingerprint
        self.resume_command = resume_command  # said when a stop signal ends the run
        self.is_main = rank == 0

        self.micro_bs = tcfg.micro_batch(world)  # the split checked by the schema
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
        self.stream = is_stream(train)
        self.carry = False
        if self.stream:
            self.carry = carry_state(task, model)
            if tcfg.max_train_examples:  # a prefix of max_train_examples windows
                train = Prefix(train, tcfg.max_train_examples * task.max_len + 1)
        elif tcfg.max_train_examples:
            train = Subset(train, list(range(min(len(train), tcfg.max_train_examples))))
        self.train_set = train
        self.carried: dict[int, Any] = {}  # micro-batch index -> state of its rows

        # Bookkeeping saved in last.pt.
        self.step = 0
        self.batches_done = 0
        self.best = {
            "metric": self.objective.metric,
            "value": None,
            "val_acc": -1.0,
            "step": -1,
            "val_loss": float("nan"),
        }
        self.last_eval_step = -1
        self.timers = {"train_s": 0.0, "eval_s": 0.0, "tokens": 0}
        self.step_times: list[float] = []
        self.running: dict[str, float] = {}  # the progress bar's moving averages
        self._warned_long = False
        # A stop signal inside a step (one process) or an evaluation stops it at once.
        self.signals = StopSignals(interrupts=world == 1, on_first=self._on_signal)
        # Where the step in progress started (RNG, batch count, tokens): a stop signal in
        # the middle of a long step abandons it and saves the state as of its start.
        self._step_start: dict[str, Any] | None = None
        self.evaluator = Evaluator(
            task,
            splits,
            tcfg,
            self.objective,
            device,
            self.micro_bs,
            self.signals,
            self._autocast,
            rank,
            world,
        )

    # ------------------------------------------------------------------ loops

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, batch, micro: int = 0, reset: bool = False):
        with self._autocast():
            if self.carry:
                state = None if reset else self.carried.get(micro)
                out, aux, new = self.model(batch, state, carry=True)
                self.carried[micro] = detached_rows(new, None)
            else:
                out, aux = self.model(batch)
            loss = self.objective.loss(out, batch["y"])
            aux_loss = aux.pop("aux_loss", None)
            total = loss if aux_loss is None else loss + aux_loss
        return out, loss, total, aux

    def _train_step(self, it) -> dict[str, float]:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses, correct, count, rates = 0.0, 0, 0, {}
        self.signals.check()  # a signal noted since the last step: stop before this one
        self._begin_step()
        for micro in range(self.tcfg.grad_accum):
            batch = self.signals.fetch(it)  # never interrupted inside the loader
            if batch is None:
                raise RuntimeError("the training batches ended; they are meant to cycle")
            reset = bool(batch.pop("reset", False))
            batch = to_device(batch, self.device)
            self.batches_done += 1
            sync = micro == self.tcfg.grad_accum - 1 or self.world == 1
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx:
                if self.carry:
                    out, loss, total, aux = self._forward(batch, micro, reset)
                else:
                    out, loss, total, aux = self._forward(batch)
                (total / self.tcfg.grad_accum).backward()
            losses += float(loss.detach())
            c, k = self.objective.train_stats(out, batch["y"])
            correct += int(c)
            count += k
            self.timers["tokens"] += _tokens(batch)
            for k, v in aux.items():  # tensors: read once per step, below
                if k.endswith(RATE_KEYS):
                    rates[k] = rates.get(k, 0.0) + v.detach() / self.tcfg.grad_accum
        self.signals.interruptible = (
            False  # from here on the step completes: signals wait for its end
        )
        loss = losses / self.tcfg.grad_accum
        bad = not math.isfinite(loss)
        rates = floats(rates)
        if self.world > 1:
            bad, loss, correct, count, rates = self._agree(bad, loss, correct, count, rates)
        if bad:
            raise TrainingError(
                f"non-finite training loss ({loss}) at step {self.step + 1}; stopped before "
                f"updating the weights, {self._kept()}. {self._fix()}, or check the data."
            )
        if self.tcfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model_raw.parameters(), self.tcfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self._step_start = None
        m = {"loss": loss, **rates}
        if count:
            m["acc"] = correct / count
        return m

    def _agree(self, bad: bool, loss: float, correct: int, count: int, rates: dict[str, float]):
        """Under DDP, after the step's backward: one all-reduce makes every rank take the
        same decisions (a non-finite loss anywhere stops every rank; a stop signal received
        by any rank stops every rank at this step, which is abandoned) and gives the step's
        loss, accuracy and rates as the means over every rank's share of the batch (the
        numbers one process would log for the whole batch). These per-step numbers are not
        torchmetrics metrics (the evaluation's are, ``harness.metrics``): the stop flag must
        reach every rank in the same collective as the step's numbers, and torchmetrics'
        own sync would add one collective per metric at every step."""
        keys = sorted(rates)
        stop = self.signals.signum is not None
        vals = [float(bad), float(stop), loss if not bad else 0.0, correct, count]
        t = torch.tensor([*vals, *(rates[k] for k in keys)], dtype=torch.float64)
        t = t.to(self.device)
        dist.all_reduce(t)
        out = t.tolist()
        if out[1] > 0:  # some rank received a stop signal: all stop, at the same step
            sig = torch.tensor([self.signals.signum or 0], device=self.device)
            dist.all_reduce(sig, op=dist.ReduceOp.MAX)
            if self.signals.signum is None:
                self.signals.signum = int(sig.item())
            raise Preempted
        w = self.world
        mean_rates = {k: v / w for k, v in zip(keys, out[5:])}
        bad = out[0] > 0
        return bad, float("nan") if bad else out[2] / w, int(out[3]), int(out[4]), mean_rates

    def _train_batches(self):
        """Endless training batches from ``batches_done`` on (this rank's share).

        Streams: rows ``rows = batch_size`` of the train stream, window after window; the
        micro-batch ``m`` of a step reads its own rows and carries its own state; the state
        resets at each pass over the stream. Data sets drawing fresh examples per index
        (``endless``): consecutive indices. Others: a seeded permutation per epoch."""
        tc = self.tcfg
        if self.stream:
            yield from train_windows(
                self.train_set.tokens,
                self.task,
                self.micro_bs,
                tc.grad_accum,
                self.batches_done,
                self.rank,
                self.world,
            )
            return
        yield from train_batches(
            self.train_set,
            self.splits.collate,
            self.micro_bs * self.world,
            self.seed,
            self.batches_done,
            self.rank,
            self.world,
            tc.num_workers,
        )

    def evaluate(self, split: str, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """The objective's metrics over every example of a split (no dropped partial
        batch; a stream: every token, with the state carried across its windows)."""
        return self.evaluator.evaluate(split, model or self.model_raw, self.carry)

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
        metric = self.objective.metric
        if not (math.isfinite(res["val/loss"]) and math.isfinite(res[f"val/{metric}"])):
            # every rank sees the same (reduced) numbers: all stop here
            raise TrainingError(
                f"non-finite validation loss ({res['val/loss']}) at step {self.step}: the "
                f"weights diverged; stopped without saving them (best.pt stays at step "
                f"{self.best['step']}), {self._kept()}. {self._fix()}."
            )
        if self.objective.better(res[f"val/{metric}"], self.best["value"]):
            self.best = {
                "metric": metric,
                "value": res[f"val/{metric}"],
                "val_acc": res.get("val/acc", float("nan")),
                "step": self.step,
                "val_loss": res["val/loss"],
            }
            if self.is_main:
                ckpt.save(
                    self.ckpt_dir / "best.pt",
                    {"model": self.model_raw.state_dict(), "step": self.step, "val": res},
                )
        res.update(
            {
                "step": self.step,
                f"best/val_{metric}": self.best["value"],
                "best/step": self.best["step"],
            }
        )
        res.update({f"sys/{k}": v for k, v in self.summary().items() if k != "peak_memory_kind"})
        self.loggers.log(res)
        if pbar is not None:
            pbar.write(
                f"step {self.step}: val {metric} {res[f'val/{metric}']:.4f} loss "
                f"{res['val/loss']:.4f} (best {self.best['value']:.4f} @ {self.best['step']})"
            )
        log.info(
            "step %d val %s",
            self.step,
            {k: round(v, 4) for k, v in res.items() if isinstance(v, float)},
        )

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

    def fit(self) -> None:
        self.signals.install()
        self.try_resume()
        self._last_saved_step = self.step
        it = self._train_batches()
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
                    shown = {
                        k: f"{self.running[k]:.3f}" for k in ("loss", "acc") if k in self.running
                    }
                    pbar.set_postfix(**shown, lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
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
                if self.world == 1 and self.signals.signum is not None:
                    self._exit_for_signal()
        except Preempted:
            self._exit_for_signal()
        finally:
            if pbar is not None:
                pbar.close()
            del it

    def test(self) -> dict[str, Any]:
        """Test at the best-validation weights (the last ones if no validation ran)."""
        best_path = self.ckpt_dir / "best.pt"
        if self.is_main and best_path.exists():
            self.model_raw.load_state_dict(ckpt.load(best_path)["model"])
        if self.world > 1:
            # Rank 0 wrote best.pt (it may have done so a moment ago, at the last
            # validation): its weights go to every rank, which reads no file another rank
            # writes. Without this a rank could test an older best.pt than rank 0.
            for t in self.model_raw.state_dict().values():
                dist.broadcast(t, src=0)
        t0 = time.perf_counter()
        try:
            res = self.evaluate("test")
        except Preempted:
            self._exit_for_signal()
        self.timers["eval_s"] += time.perf_counter() - t0
        return res

    def summary(self) -> dict[str, Any]:
        """Timings, throughput and memory for results.json."""
        return run_summary(self.timers, self.step_times, self.device)

    def flops(self) -> dict[str, Any]:
        """Forward FLOPs per sequence over the whole validation set (the examples
        ``trainer.max_eval_examples`` keeps, if set), executed and dense, for the whole
        model and for its sequence mixers alone; the rest always runs dense.

        Called after ``test`` so the model holds the best-validation weights: a learned
        gate's update rate, and so the executed FLOPs, change during training."""
        return self.evaluator.flops(self.model_raw)
