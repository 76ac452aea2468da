"""The trainer's saving, resuming and stopping (``Resumable``, a base class of ``Trainer``).

``last.pt`` holds the model, optimizer, scheduler, every RNG state and the trainer's
bookkeeping (step, batches read, best validation, timers, the state carried per micro-batch),
so a resumed run is identical to an uninterrupted one (``surnn.harness.checkpoint`` writes
and reads the files). A checkpoint is written only of finite weights; a run that diverges
stops naming the last good checkpoint. A stop signal in the middle of a step (one process)
or an evaluation stops it at once: the step is abandoned, ``last.pt`` is saved as of its
start and the signal is handed on (``surnn.harness.preemption``).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import torch
import torch.distributed as dist

from surnn.errors import TrainingError
from surnn.harness import checkpoint as ckpt

# These are the trainer's messages: logged under its name.
log = logging.getLogger("surnn.harness.trainer")


class Resumable:
    """Saving, resuming and stopping for ``Trainer``, whose attributes it reads and sets:
    ``model_raw``, ``optimizer``, ``scheduler``, the bookkeeping saved in last.pt, ``signals``
    (its stop signals) and ``_step_start`` (where the step in progress started)."""

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
            "carried": self.carried,
        }

    def save_last(self) -> None:
        self._check_finite_weights()  # on every rank: the same weights, the same decision
        if self.is_main:
            ckpt.save(self.ckpt_dir / "last.pt", self._state())

    def try_resume(self) -> bool:
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            return False
        state = ckpt.load_last(path, self.fingerprint, self.run_dir)
        self.model_raw.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.step, self.batches_done = state["step"], state["batches_done"]
        self.best, self.last_eval_step = state["best"], state["last_eval_step"]
        self.carried = state.get("carried", {})
        self.timers, self.step_times = state["timers"], list(state["step_times"])
        self.running = dict(state.get("running", {}))
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def _kept(self) -> str:
        """Where the run can go back to: the last checkpoint written (every last.pt is
        checked finite, weights and validation, before it is written)."""
        last = self.ckpt_dir / "last.pt"
        if last.exists():
            return f"the last good checkpoint is {last} (step {self._last_saved_step})"
        return "no checkpoint had been saved yet"

    def _fix(self) -> str:
        if self.tcfg.clip_grad:
            return f"Lower optim.lr or trainer.clip_grad (now {self.tcfg.clip_grad})"
        return "Lower optim.lr or set trainer.clip_grad (e.g. 1.0)"

    def _check_finite_weights(self) -> None:
        """A checkpoint is written only of finite weights: a step whose loss was finite
        can still leave inf/NaN weights behind (a huge learning rate), and saving them
        would make last.pt a run that resumes into NaN."""
        if all(bool(torch.isfinite(p).all()) for p in self.model_raw.parameters()):
            return
        raise TrainingError(
            f"the weights became non-finite at step {self.step}; stopped without saving "
            f"them, {self._kept()}. {self._fix()}."
        )

    # ------------------------------------------------------------------ stop signals

    def _on_signal(self, signum: int) -> None:
        """The first stop signal: say so. Inside a training step (one process) or an
        evaluation ``self.signals`` stops at once: the step is abandoned before the
        optimizer touches the weights, and last.pt holds the state as of its start."""
        if self.is_main:
            log.warning(
                "received %s at step %d: saving last.pt and stopping",
                signal.Signals(signum).name,
                self.step,
            )

    def _begin_step(self) -> None:
        self._step_start = {
            "rng": ckpt.rng_state(),
            "batches_done": self.batches_done,
            "tokens": self.timers["tokens"],
        }
        self.signals.interruptible = True

    def _abandon_step(self) -> None:
        """Back to the start of the interrupted step (weights and optimizer are untouched
        until optimizer.step, which runs outside the interruptible part)."""
        self.signals.interruptible = False
        snap = self._step_start
        if snap is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        ckpt.set_rng_state(snap["rng"])
        self.batches_done = snap["batches_done"]
        self.timers["tokens"] = snap["tokens"]
        self._step_start = None

    def _exit_for_signal(self) -> None:
        """Save last.pt, then hand the signal on (default action or, e.g., submitit's
        requeue handler)."""
        self.signals.interruptible = False
        if self._step_start is not None:  # a step was cut short: save as of its start
            self._abandon_step()
        self.save_last()
        if self.world > 1:
            dist.barrier()  # rank 0 has written last.pt before any rank exits
        if self.is_main:
            log.warning(
                "saved last.pt at step %d; exiting. To resume this run: %s",
                self.step,
                self.resume_command or f"rerun it with the same run_id (run folder {self.run_dir})",
            )
        self.loggers.close()
        self.signals.hand_on()
