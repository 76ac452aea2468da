"""Language-model streams: one token stream per split, read in windows, with the state of
stateful mixers carried from a window to the next (truncated BPTT).

The trainer sees a stream split through ``is_stream``; training reads ``rows =
batch_size`` rows of the train stream window after window (``train_windows``), each
micro-batch of a step its own rows; evaluation reads every token once, windows in order
(``eval_windows``). Whether the state is carried is ``carry_state``'s decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from surnn.errors import ConfigError
from surnn.harness.data import StreamWindows

# The trainer's warnings, under the trainer's name as before they moved here.
log = logging.getLogger("surnn.harness.trainer")


def is_stream(split) -> bool:
    """A language-modelling split: one token stream (``tokens``), read in windows."""
    return getattr(split, "tokens", None) is not None and getattr(split, "stream", False)


def detached_rows(state, idx: torch.Tensor | None):
    """The carried state (per layer: a dict of [B, ...] tensors) of the rows ``idx``,
    detached (truncated BPTT); None stays None."""
    if state is None:
        return None
    return [
        {k: (v if idx is None else v[idx.to(v.device)]).detach() for k, v in s.items()}
        for s in state
    ]


class Prefix:
    """The first ``n`` tokens of a stream split (smoke runs: max_*_examples windows)."""

    stream = True

    def __init__(self, base, n: int):
        self.tokens = base.tokens[: max(2, n)]

    def __len__(self) -> int:
        return len(self.tokens)


def carry_state(task, model) -> bool:
    """Carry the state across windows? ``task.carry_state`` (checked by the task): true
    (every mixer must be stateful), false, or auto (when every mixer is; else independent
    windows, warned)."""
    want = getattr(task, "carry_state", "auto")
    enc = getattr(model, "encoder", None)
    stateful = bool(enc is not None and enc.stateful)
    if want is True:
        if not stateful:
            kinds = sorted(set(getattr(model, "layer_kinds", []) or ["?"]))
            raise ConfigError(
                f"task.options.carry_state=true but model layer kind(s) {', '.join(kinds)} "
                "cannot carry a state across windows (stateful mixers: surnn, gru, lstm); "
                "use carry_state=auto or false"
            )
        return True
    if want is False:
        return False
    if not stateful:
        log.warning(
            "task=%s: this model cannot carry its state across windows; every window of "
            "%d tokens is read from a zero state (results.json records carry_state=false)",
            task.name,
            task.max_len,
        )
    return stateful


def train_windows(
    tokens,
    task,
    micro_bs: int,
    grad_accum: int,
    start: int,
    rank: int = 0,
    world: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training micro-batches of a stream from micro-batch ``start`` on (this
    rank's share): ``micro_bs * grad_accum * world`` rows, window after window; the
    micro-batch ``m`` of a step reads its own rows (and carries its own state), and
    ``reset`` is true at the first window of each pass over the stream."""
    rows = micro_bs * grad_accum * world
    try:
        win = StreamWindows(tokens, rows, task.max_len, True)
    except ValueError as e:
        raise ConfigError(
            f"task={task.name}: {e}; lower trainer.batch_size or the window (task.options.max_len)"
        ) from None
    k = start
    while True:
        w, micro = divmod(k, grad_accum)
        j = w % win.n_windows
        first = (micro * world + rank) * micro_bs
        b = win.batch(j, list(range(first, first + micro_bs)))
        b.pop("rows")
        b["reset"] = j == 0
        yield b
        k += 1


def eval_windows(
    split: str,
    ds,
    window: int,
    batch_size: int,
    max_examples: int | None,
    rank: int = 0,
    world: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """Every token of a stream split once (the first ``max_examples`` windows' worth, if
    set): windows in order, ``batch_size * world`` rows, this rank's share; ``rows``
    names the rows of a batch, whose state carries over from the previous window."""
    if max_examples:
        n = max_examples * window + 1
        if len(ds.tokens) > n:
            log.warning(
                "%s: evaluating the first %d of %d tokens (trainer.max_eval_examples windows)",
                split,
                n,
                len(ds.tokens),
            )
            ds = Prefix(ds, n)
    rows_total = max(1, min(batch_size * world, len(ds.tokens) - 1))
    win = StreamWindows(ds.tokens, rows_total, window, full_only=False)
    mine = list(range(rank, rows_total, world))
    for j in range(win.n_windows):
        b = win.batch(j, mine)
        if len(b["rows"]):
            yield b
