"""Resumable, seeded batching and full-coverage evaluation loaders.

The training order is a permutation per epoch drawn from ``(seed, epoch)``, so the
position ``(epoch, batch)`` is all a checkpoint needs to continue exactly. Under DDP each
rank takes an interleaved share of every global batch. Evaluation visits every example
once, with no dropped partial batch and no padding duplicates across ranks.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _own_generator() -> torch.Generator:
    """Each loader iterator draws a worker base seed; from its own generator, so that
    making a loader never moves the global RNG (dropout masks after a resume stay the
    same as in an uninterrupted run)."""
    return torch.Generator().manual_seed(0)


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def _worker_init(_worker_id: int) -> None:
    """Loader workers ignore the preemption signals the trainer handles.

    SLURM preemption, ``scancel``, ``timeout`` and ``kill -- -PGID`` signal the whole
    process group. A worker killed by SIGTERM makes the main process raise "DataLoader
    worker ... is killed by signal: Terminated" from its SIGCHLD handler before the
    trainer reaches the step boundary where it saves last.pt, so the run died without a
    checkpoint. Ignoring the signal here leaves it to the main process, which saves and
    exits; its workers then stop with it (their parent watchdog).
    """
    for s in PREEMPTION_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


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
