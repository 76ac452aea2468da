"""Resumable, seeded batching and full-coverage evaluation loaders.

The training order is a permutation per epoch drawn from ``(seed, epoch)``, so the
position ``(epoch, batch)`` is all a checkpoint needs to continue exactly. Under DDP each
rank takes an interleaved share of every global batch. Evaluation visits every example
once, with no dropped partial batch and no padding duplicates across ranks.
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from surnn.harness.objectives import IGNORE_INDEX


def _own_generator() -> torch.Generator:
    """Each loader iterator draws a worker base seed; from its own generator, so that
    making a loader never moves the global RNG (dropout masks after a resume stay the
    same as in an uninterrupted run)."""
    return torch.Generator().manual_seed(0)


#: The signals that stop a run with last.pt saved: SLURM preemption, scancel and timeout
#: (TERM, USR1, USR2) and Ctrl-C in a terminal (INT, to the whole foreground group).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


def _worker_init(_worker_id: int) -> None:
    """Loader workers ignore the stop signals the trainer handles.

    SLURM preemption, ``scancel``, ``timeout``, ``kill -- -PGID`` and Ctrl-C signal the
    whole process group. A worker killed by SIGTERM makes the main process raise "DataLoader
    worker ... is killed by signal: Terminated" from its SIGCHLD handler before the
    trainer reaches the step boundary where it saves last.pt, so the run died without a
    checkpoint. Ignoring the signal here leaves it to the main process, which saves and
    exits; its workers then stop with it (their parent watchdog). The worker was forked
    with the signals blocked (``StopSignals.fetch``): from its start until here, torch's own
    worker handler would die of a SIGTERM; a signal pending since then is discarded by
    SIG_IGN, and they are unblocked.
    """
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _end_workers_at_exit() -> None:
    """At the interpreter's exit, multiprocessing ends its daemonic children (loader workers)
    with SIGTERM and waits for them; loader workers ignore SIGTERM (``_worker_init``), so a
    loader still alive then (an exception raised during an evaluation keeps its iterator in
    the traceback) would be waited for forever. They are killed first: as daemons they end
    with the process anyway. Registered after multiprocessing's own exit hook, so it runs
    before it. (Main thread only: atexit callbacks run there.)"""
    daemons = [p for p in multiprocessing.active_children() if p.daemon]
    if not daemons:
        return
    # torch's SIGCHLD handler would raise "DataLoader worker ... killed" here, at the first
    # death: the process is ending, so the default action serves
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for p in daemons:
        p.kill()
    for p in daemons:
        p.join(timeout=10)


atexit.register(_end_workers_at_exit)


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless seeded batches starting at global batch index ``start``.

    Batch ``k`` is batch ``k % batches_per_epoch`` of epoch ``k // batches_per_epoch``;
    the trainer counts the batches it has consumed (loader workers read ahead, so the
    sampler itself cannot know) and restarts the sampler there on resume.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1
    ):
        if n < batch_size:
            raise ValueError(f"train split has {n} examples, fewer than one batch ({batch_size})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.rank, self.world = start, rank, world

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size  # full batches only in training

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        epoch, pos = divmod(self.start, self.batches_per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            for p in range(pos, self.batches_per_epoch):
                b = perm[p * self.batch_size : (p + 1) * self.batch_size]
                yield b[self.rank :: self.world].tolist()
            epoch, pos = epoch + 1, 0


def train_loader(
    ds: Dataset, sampler: ResumableBatchSampler, collate, num_workers: int
) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        generator=_own_generator(),
        worker_init_fn=_worker_init,
    )


class _Shard(Dataset):
    def __init__(self, base: Dataset, rank: int, world: int):
        self.base, self.idx = base, list(range(rank, len(base), world))

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i):
        return self.base[self.idx[i]]


def eval_loader(
    ds: Dataset, batch_size: int, collate, num_workers: int, rank=0, world=1
) -> DataLoader:
    if world > 1:
        ds = _Shard(ds, rank, world)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        collate_fn=collate,
        num_workers=num_workers,
        generator=_own_generator(),
        worker_init_fn=_worker_init,
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class SequentialBatchSampler(Sampler[list[int]]):
    """Batches of consecutive indices from ``start``: batch ``k`` is examples
    ``[k B, (k+1) B)`` (this rank's interleaved share). For data sets that draw example
    ``i`` from ``(seed, i)`` (``endless``): every step sees fresh examples, and the step
    alone fixes them, so a resumed run reads the same ones."""

    def __init__(self, n: int, batch_size: int, start: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.start = n, batch_size, start
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            lo = (k * self.batch_size) % max(self.n - self.batch_size + 1, 1)
            yield list(range(lo + self.rank, lo + self.batch_size, self.world))
            k += 1


def train_batches(
    ds: Dataset,
    collate,
    batch_size: int,
    seed: int,
    start: int,
    rank: int = 0,
    world: int = 1,
    num_workers: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches of ``ds`` from global batch ``start`` on (this rank's
    share of each ``batch_size``): consecutive indices for data sets drawing fresh examples
    per index (``endless``), else a seeded permutation per epoch."""
    if getattr(ds, "endless", False):
        sampler = SequentialBatchSampler(len(ds), batch_size, start, rank, world)
    else:
        sampler = ResumableBatchSampler(len(ds), batch_size, seed, start, rank, world)
    yield from train_loader(ds, sampler, collate, num_workers)


class StreamWindows:
    """A token stream cut into ``rows`` parallel rows, read in windows of ``window`` steps
    (truncated BPTT: row r of window j continues row r of window j - 1).

    ``tokens``: 1-D ids (0 = padding, never inside a stream); the target of a position is
    the next token's id minus ``target_offset``. ``full_only`` (training): equal rows and
    full windows only (at most rows x window trailing tokens unread per epoch); otherwise
    (evaluation) every token but the first is predicted exactly once: rows differ by at
    most one token and the last window may be ragged (its empty rows, a suffix, dropped).
    """

    def __init__(
        self, tokens, rows: int, window: int, full_only: bool, target_offset: int = 1
    ) -> None:
        import numpy as np

        n_pred = len(tokens) - 1
        if n_pred < rows or window < 1:
            raise ValueError(f"a stream of {len(tokens)} tokens cannot fill {rows} rows")
        base, rem = divmod(n_pred, rows)
        if full_only:
            rem = 0
        self.tokens, self.rows, self.window, self.offset = tokens, rows, window, target_offset
        self.row_len = np.array([base + (b < rem) for b in range(rows)], dtype=np.int64)
        self.row_start = np.concatenate([[0], np.cumsum(self.row_len)[:-1]]).astype(np.int64)
        self.n_windows = base // window if full_only else -(-int(self.row_len[0]) // window)
        if self.n_windows < 1:
            raise ValueError(
                f"a stream of {len(tokens)} tokens in {rows} rows is shorter than one "
                f"window of {window}"
            )

    def batch(self, j: int, rows: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Window ``j`` of the given rows (default all) with rows that hold nothing left out:
        ``x``, ``y`` [b, L], ``lengths`` [b], ``rows`` [b] (their indices)."""
        import numpy as np

        rows = list(range(self.rows)) if rows is None else rows
        lo = j * self.window
        lens = np.clip(self.row_len[rows] - lo, 0, self.window)
        keep = [r for r, n in zip(rows, lens) if n > 0]
        lens = lens[lens > 0]
        L = int(lens.max()) if len(lens) else 0
        x = np.zeros((len(keep), L), dtype=np.int64)
        y = np.full((len(keep), L), IGNORE_INDEX, dtype=np.int64)
        for i, (r, n) in enumerate(zip(keep, lens)):
            s = int(self.row_start[r]) + lo
            seg = np.asarray(self.tokens[s : s + int(n) + 1], dtype=np.int64)
            x[i, :n] = seg[:-1]
            y[i, :n] = seg[1:] - self.offset
        return {
            "x": torch.from_numpy(x),
            "y": torch.from_numpy(y),
            "lengths": torch.from_numpy(lens.astype(np.int64)),
            "rows": torch.tensor(keep, dtype=torch.long),
        }
