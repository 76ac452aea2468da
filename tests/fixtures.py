"""The plain helpers the tests share (their pytest fixtures are in conftest.py): a tiny
in-memory task (no files, no registry) and a data-less stand-in for one, run.py in a
subprocess, or its training and its error line in this process, a function run on several
processes joined by a gloo process group (DDP on CPU), the loader of the scripts under
test, a read-only folder as a mount makes one, a data folder of each file-based task's raw
files at a few examples, the selective-update GRU op cases and the Triton set-up. Writers
of the real data formats live in tasks/formats.py."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from surnn.ops import su_gru
from tasks.base import Splits, Task
from tasks.collate import make_collate
from tasks.datasets import SequenceDataset, pack_sequences
from tasks.formats import write_aan, write_aclimdb, write_cifar, write_mnist, write_wikitext

ROOT = Path(__file__).resolve().parents[1]
#: run.py overrides of a tiny generated ListOps (64 / 20 / 21 sequences of 10-60 tokens,
#: depth <= 3): a run in seconds.
TINY_LISTOPS = [
    "task.options.generate.n_train=64",
    "task.options.generate.n_val=20",
    "task.options.generate.n_test=21",
    "task.options.generate.min_length=10",
    "task.options.generate.max_length=60",
    "task.options.generate.max_depth=3",
    "task.options.max_len=64",
]

#: each file-based task's raw files, as its download holds them, at a few examples (2 x 3
#: reviews per split, 4 / 2 / 2 pairs, 6 x 4 images, 12 + 4 digits, the WikiText-2 files)
_RAW = {
    "text": lambda d: write_aclimdb(d, n=3),
    "retrieval": lambda d: write_aan(d, {"train": 4, "eval": 2, "test": 2}),
    "image": lambda d: write_cifar(d, n=4),
    "smnist": lambda d: write_mnist(d / "mnist", n_train=12, n_test=4),
    "wikitext2": lambda d: write_wikitext(d, "wikitext-2"),
}


def write_raw(d: Path, *names: str) -> Path:
    """The raw files of the tasks ``names`` (keys of ``_RAW``; image's also serve scifar,
    smnist's psmnist) in data folder ``d``; returns d."""
    for name in names:
        _RAW[name](d)
    return d


class ToyTask(Task):
    """Class c draws its tokens from {c+1, c+4, c+7}; lengths 3..L so padding is exercised."""

    name = "toy"
    n_classes = 3
    input_kind = "tokens"
    vocab_size = 10
    max_len = 12
    dual = False

    def __init__(self, n_train: int = 96, n_eval: int = 30, seed: int = 0):
        super().__init__(".")
        rng = np.random.default_rng(seed)

        def make(n):
            labels = rng.integers(0, self.n_classes, size=n)
            seqs = [
                1 + c + 3 * rng.integers(0, 3, size=rng.integers(3, self.max_len + 1))
                for c in labels
            ]
            data, offsets = pack_sequences(seqs, np.int16)
            return SequenceDataset(data, offsets, labels)

        self._splits = Splits(make(n_train), make(n_eval), make(n_eval + 1), make_collate("tokens"))

    def splits(self) -> Splits:
        return self._splits


def standin(objective: str, **kw) -> SimpleNamespace:
    """What the backbone reads of a task (Model(task, ...)), no data: an ``objective``
    task of 7 classes over 9 token ids, sequences up to 40; ``kw`` overrides any field
    (``input_kind="values", input_dim=2``; ``dual=True``)."""
    base = dict(
        name="standin",
        objective=objective,
        n_classes=7,
        input_kind="tokens",
        vocab_size=9,
        input_dim=None,
        max_len=40,
        dual=False,
    )
    return SimpleNamespace(**{**base, **kw})


#: TINY_LISTOPS without a logger
TINY_RUN = [*TINY_LISTOPS, "logger=none"]


def run_py_env() -> dict[str, str]:
    """The environment run.py runs in as a user runs it: this checkout's packages on the
    path, wandb offline."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def run_py(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python run.py *args`` in ``cwd`` as a user runs it (run_py_env); flags (``-m``) go
    before the overrides."""
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *flags, *rest],
        cwd=cwd,
        env=run_py_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def in_tmp(args: list[str], tmp: Path) -> list[str]:
    """run.py's arguments for a run whose data is in ``tmp/data`` and its run folders in
    ``tmp/out``."""
    return [f"data_dir={tmp / 'data'}", f"output_dir={tmp / 'out'}", *args]


def run_in_tmp(args: list[str], tmp: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python run.py *args`` in ``tmp`` with its data in ``tmp/data`` and its run folders
    in ``tmp/out`` (run_py)."""
    return run_py(in_tmp(args, tmp), tmp, timeout)


def train_here(overrides: list[str], out: Path, run_id: str, prechecked: bool = False):
    """What ``python run.py *overrides output_dir=<out> run_id=<run_id>`` trains, in this
    process: the config composed as run.py composes it, then harness.run.train (results.json
    in ``out/run_id``); its RunResult. No process start-up: for tests of a run's outcome,
    not of run.py's command line. ``prechecked``: run.py's precheck first, its check and
    model handed to the run as run.py hands them (else the run checks and builds its own)."""
    from hydra import compose, initialize_config_dir

    from surnn.harness import cli
    from surnn.harness.run import train

    overrides = [*overrides, f"output_dir={out}", f"run_id={run_id}"]
    if prechecked:
        cli.precheck(overrides)
    with initialize_config_dir(str(cli.CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    checked = cli.prechecked(cfg) if prechecked else None
    if prechecked:
        assert checked is not None, "run.py's precheck hands the run nothing"
    command = f"python run.py {' '.join(overrides)}"
    return train(cfg, Path(out) / run_id, command=command, checked=checked)


@contextlib.contextmanager
def nothing_else_on_stderr(logs: bool = True):
    """Fails unless the block writes nothing to stderr as a process of its own would show
    it: no print to sys.stderr, no warning Python shows by default and (``logs``) no
    WARNING or worse log record (before Hydra configures logging, Python prints those on
    stderr). With it, an error raised inside is the only line run.py prints on stderr."""
    import io
    import logging
    import warnings

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    if logs:
        logging.getLogger().addHandler(handler)
    buf = io.StringIO()
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(buf):
            warnings.simplefilter("default")
            yield
    finally:
        logging.getLogger().removeHandler(handler)
    shown = [str(w.message) for w in caught if not issubclass(w.category, hidden)]
    assert not shown and not records and not buf.getvalue(), (shown, records, buf.getvalue())


def precheck_error(argv: list[str]) -> str:
    """The line ``python run.py *argv`` prints on stderr before it exits with status 2,
    checked in this process: run.py first calls cli.precheck(argv), before Hydra makes a
    run folder, and prints the HarnessError it raises as this one line. For the cases of
    a contract whose command line one real run.py process tests."""
    from surnn.errors import HarnessError
    from surnn.harness.cli import precheck

    with nothing_else_on_stderr(), pytest.raises(HarnessError) as e:
        precheck(argv)
    line = f"error: {e.value}"
    assert "\n" not in line, line
    return line


def run_error(overrides: list[str], out: Path, run_id: str) -> str:
    """The line ``python run.py *overrides output_dir=<out> run_id=<run_id>`` prints on
    stderr before it exits with status 2 when the run fails before it starts (bad data,
    a locked folder), checked in this process: cli.precheck passes, harness.run.train
    raises RunNotStarted, and run.py prints its cause as this one line (then removes the
    run folder if it holds only what Hydra wrote: remove_if_only_hydra)."""
    from surnn.harness.cli import precheck
    from surnn.harness.run import RunNotStarted

    precheck([*overrides, f"output_dir={out}", f"run_id={run_id}"])
    with nothing_else_on_stderr(logs=False), pytest.raises(RunNotStarted) as e:
        train_here(overrides, out, run_id)
    line = f"error: {e.value.cause}"
    assert "\n" not in line, line
    return line


def crash_after(trainer, steps: int) -> None:
    """Make ``trainer`` stop dead (``KeyboardInterrupt``, where a kill would stop it) when it
    begins its step number ``steps + 1`` in this process: ``fit`` raises, and the run
    folder holds what it had saved by then."""
    done, step = [0], trainer._train_step

    def counted(it):
        if done[0] == steps:
            raise KeyboardInterrupt
        done[0] += 1
        return step(it)

    trainer._train_step = counted


def run_ranks(fn, world: int, folder: Path, *args) -> list:
    """``fn(rank, world, *args)`` on ``world`` processes joined by a gloo process group:
    what each returned, by rank; ``folder`` holds the rendezvous file and the results. The
    processes are forked (no imports to repeat: a spawned one costs seconds of start-up)
    and run torch on one thread, as DataLoader workers do (OpenMP's pool does not survive
    a fork)."""
    import torch.multiprocessing as mp

    args = (world, str(folder), fn, args)
    mp.start_processes(_rank, args=args, nprocs=world, join=True, start_method="fork")
    return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _rank(rank: int, world: int, folder: str, fn, args) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    init = f"file://{folder}/rendezvous"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world, *args), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def write_run_folder(folder: Path, results: dict, metrics: list[dict] | None = None) -> Path:
    """A run folder as run.py leaves it, for the scripts that read run folders: its
    results.json and (``metrics``: one dict a line) its metrics.jsonl; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    if metrics is not None:
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")
    return folder


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (scripts are programs, not a package)."""
    import importlib.util
    import sys

    if name not in sys.modules:
        path = ROOT / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


# ------------------------------------------------------------------ read-only folders


def read_only(root: Path, setattr=setattr) -> None:
    """Make ``root`` read-only for this process and the processes it forks, as a read-only
    mount is: ``chmod -R a-w`` on it, and since the root user (the user of many CI
    containers) writes through permissions, every call that would create, change or remove
    a file under it fails with EROFS, and ``os.access`` reports it unwritable. ``setattr``:
    pass ``monkeypatch.setattr`` to undo it all after the test."""
    import builtins
    import errno
    import io
    import stat

    root = Path(root).absolute()
    for p in [root, *root.rglob("*")]:
        mode = p.lstat().st_mode
        if not p.is_symlink():
            os.chmod(p, stat.S_IMODE(mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

    def under(path) -> bool:
        if isinstance(path, int):
            return False
        p = os.path.abspath(os.fsdecode(path))
        return p == str(root) or p.startswith(str(root) + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_open, real_os_open, real_access = builtins.open, os.open, os.access
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and under(file):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & write_flags and under(path):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    def access(path, mode, *a, **k):
        if mode & os.W_OK and under(path):
            return False
        return real_access(path, mode, *a, **k)

    def guard(fn, n_paths=1):
        def guarded(*args, **kw):
            for p in args[:n_paths]:
                if under(p):
                    refuse(p)
            return fn(*args, **kw)

        return guarded

    setattr(builtins, "open", open_)
    setattr(io, "open", open_)
    setattr(os, "open", os_open)
    setattr(os, "access", access)
    for name in ("mkdir", "remove", "unlink", "rmdir", "utime", "chmod", "truncate"):
        setattr(os, name, guard(getattr(os, name)))
    for name in ("rename", "replace", "link", "symlink"):
        setattr(os, name, guard(getattr(os, name), 2))


def tree_state(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its size, mtime and contents' hash: equal before and
    after a run when the run wrote nothing there."""
    import hashlib

    out = {}
    for p in sorted(Path(root).rglob("*")):
        st = p.lstat()
        digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


# ------------------------------------------------------- selective-update GRU op cases

F64 = torch.float64


def make_case(B, T, D, H, kind, per_sample=False, lengths=False, dtype=F64, seed=0):
    """Inputs, weights, a gate g and an active set that is a superset of the open neurons
    (bounded-surrogate training). kind: random, open, closed, slab (one slab of neurons per
    step), sparse (about 17% open, scattered) or soft (non-binary g, every neuron active)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*s, scale=0.4):
        return (torch.randn(*s, generator=gen, dtype=dtype) * scale).requires_grad_()

    x, h0 = rnd(B, T, D, scale=1.0), rnd(B, H, scale=1.0)
    w = [rnd(3 * H, D), rnd(3 * H, H), rnd(3 * H), rnd(3 * H)]
    shape = (B, T, H) if per_sample else (T, H)
    u = torch.rand(shape, generator=gen, dtype=dtype)
    if kind == "open":
        u = torch.zeros(shape, dtype=dtype)
    elif kind == "closed":
        u = torch.ones(shape, dtype=dtype)
    elif kind == "sparse":
        u = u * (0.35 / 0.17)
    elif kind == "slab":  # neuron i open when (t + i*P//H) % P == 0: one slab per step
        P = 3
        off = torch.arange(H) * P // H
        u = ((torch.arange(T)[:, None] + off[None]) % P != 0).to(dtype).expand(shape)
    if kind == "soft":
        g = torch.rand(shape, generator=gen, dtype=dtype).requires_grad_()
        active = torch.ones(shape, dtype=torch.bool)
    else:
        g = (u < 0.35).to(dtype).requires_grad_()
        active = u < 0.6  # open plus "near threshold" neurons
    lens = torch.randint(1, T + 1, (B,), generator=gen) if lengths else None
    return x, h0, w, g, active, lens


def run(impl, case, grad_seed=1):
    x, h0, w, g, active, lens = case
    out, h = su_gru(x, h0, *w, g, active, lens, impl=impl)
    gen = torch.Generator().manual_seed(grad_seed)
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float32).to(out.device, out.dtype)
    loss = (out * weights).sum() + (h * h).sum()
    grads = torch.autograd.grad(loss, [x, h0, *w, g])
    return (out, h, *grads)


def assert_close(a_list, b_list, tol):
    names = ["out", "h", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dg"]
    for name, a, b in zip(names, a_list, b_list):
        assert a.shape == b.shape, name
        err = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        assert err < tol, f"{name}: max abs diff {err:.3g}"


def op_gradcheck(op, **kwargs) -> bool:
    """torch.autograd.gradcheck of ``op(x, h0, w_ih, w_hh, b_ih, b_hh, g, active=...,
    lengths=..., **kwargs)`` in float64: a soft gate (every neuron active), ragged lengths."""
    gen = torch.Generator().manual_seed(3)
    B, T, D, H = 2, 4, 3, 5
    args = [torch.randn(s, generator=gen, dtype=F64) for s in [(B, T, D), (B, H)]]
    args += [torch.randn(s, generator=gen, dtype=F64) * 0.5 for s in [(3 * H, D), (3 * H, H)]]
    args += [torch.randn(3 * H, generator=gen, dtype=F64) * 0.5 for _ in range(2)]
    args.append(torch.rand(T, H, generator=gen, dtype=F64))  # soft gate values
    args = [a.requires_grad_() for a in args]
    active = torch.ones(T, H, dtype=torch.bool)
    lens = torch.tensor([4, 2])

    def fn(*a):
        return op(*a, active=active, lengths=lens, **kwargs)

    return torch.autograd.gradcheck(fn, args, atol=1e-7)


# ------------------------------------------------------------------ Triton on the CPU


def triton_interpreter_unless_cuda() -> None:
    """Call at the top of a Triton test module, before it imports the kernels: without
    CUDA the kernels run under the Triton interpreter on the CPU. The interpreter flag is
    read when the kernels are decorated, so it is set before they are imported, and they
    are re-decorated if another module imported them earlier without it. Without triton
    the calling module is skipped."""
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
        pytest.importorskip("triton")
        if "surnn.ops.triton.kernels" in sys.modules:
            importlib.reload(sys.modules["surnn.ops.triton.kernels"])
    else:
        pytest.importorskip("triton")


def small_triton_machine(setattr) -> None:
    """The Triton op's launch model at interpreter sizes (``setattr``: monkeypatch's): one
    16x16x16 tile configuration on 4 warps, chunks of at least 2 steps, every GEMM row
    count worth it, split-K on any size, 6 SMs; so that chunk boundaries, partial chunks
    and split-K run in small cases."""
    from surnn.ops.triton import launch, loops

    for table in ("CFG_TABLE", "CFG_TABLE_SM80"):
        setattr(launch, table, ((None, launch.Cfg(16, 16, 16, 4)),))
    setattr(launch, "C_MIN", 2)
    setattr(launch, "GEMM_ROWS", 1)
    setattr(launch, "SPLIT_MIN_BYTES", 0)
    setattr(loops, "N_SM", 6)


def corrupting_recorder():
    """A graphs.Recorder whose every replay adds 1 to the floating buffers of its first
    launch: a CUDA-graph replay that differs from its capture."""
    from surnn.ops.triton import graphs

    class Corrupting(graphs.Recorder):
        def replay(self):
            super().replay()
            for _, _, args, _ in self.launches[:1]:
                for t in args:
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 1:
                        t.add_(1.0)

    return Corrupting
