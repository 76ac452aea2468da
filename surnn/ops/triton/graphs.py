"""CUDA graphs for the Triton step loops: one graph per direction and shape replays a chunk
of C step launches, and serves every sequence length.

On the CPU its plumbing is tested with the Triton interpreter and ``Recorder``, a stand-in
for torch.cuda.CUDAGraph that keeps what a graph keeps of a capture (the kernel launches:
kernel, grid, arguments) and replays exactly those, and that fails on any tensor operation
during the capture, as a real capture of this body must never allocate
(tests/surnn/test_triton_graphs.py). The real capture and replay are tested only on a CUDA
device, by that file's CUDA-only tests (scripts/gpu_check.sh runs them).

A call of the op (loops.py) runs in chunks of C steps on chunk-sized buffers: per chunk, copies
in and GEMMs (outside any graph), the C step launches, copies out and GEMMs. The launches
read the step slot as a constant and everything that changes from call to call or chunk to
chunk (inputs, the step order and counts, lengths minus the chunk's start, the number of
valid steps of a partial chunk) from those buffers, so the launches of one chunk, captured
once over a static set of chunk buffers, replay for every chunk of every call of that shape:
any T, any schedule, any lengths. The key is the direction and everything that sizes the
buffers or changes the kernels (B, D, H, dtypes, per-sample gate, C, the launch plan,
precision), never T.

A key's first use runs eagerly (a one-off shape costs nothing more); its second use allocates
the static buffers and runs the first chunk's launches eagerly on them (this also compiles
and loads the kernels, which cannot happen during a capture), captures them, restores the
buffers the launches wrote, replays the graph, and the replay must reproduce the eager run
bit for bit. If it does not, or the capture raises, the key runs eagerly for the rest of the
process with one warning that says how to report it. A capture starts no synchronisation,
garbage collection or allocator flush (unlike torch.cuda.graph), so capturing from the
autograd thread during a backward does not stall the run. Keys whose static buffers exceed
the budget run eagerly. Inside another capture (torch.compile mode="reduce-overhead", a
user's graph) the loop runs eagerly, so the outer graph records the launches itself.

Settings (read at each call):
  SURNN_CUDA_GRAPHS=0              eager launch loop always (default 1: graphs on CUDA);
                                   su_gru_triton(..., graphs=True/False) overrides it.
  SURNN_CUDA_GRAPHS_MAX_BYTES=N    static-buffer budget of the whole cache (default: 1/8
                                   of the device's memory); least recently used evicted.
  SURNN_CUDA_GRAPHS_MAX_ENTRIES=N  graphs kept (default 8).
Memory: one static set of chunk buffers per key (launch.memory_bytes counts it; the README
gives the formula), independent of T: a training step of B=64, D=H=1024 in bf16 (C=128)
keeps about 0.2 GB (forward) + 0.4 GB (backward) per layer shape.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ENV = "SURNN_CUDA_GRAPHS"
ENV_MAX_BYTES = "SURNN_CUDA_GRAPHS_MAX_BYTES"
ENV_MAX_ENTRIES = "SURNN_CUDA_GRAPHS_MAX_ENTRIES"
_FALSE = ("0", "false", "no", "off")
REPORT = (
    "please report it with the JSON that `bash scripts/gpu_check.sh` writes "
    "(results/bench/surnn_gpu_check.json) and the device name"
)


def wanted(x: torch.Tensor, graphs: bool | None) -> bool:
    """Whether to try the graph path: tensors on a device the cache serves (CUDA), and
    ``graphs`` (None: $SURNN_CUDA_GRAPHS, default on)."""
    if x.device.type not in CACHE.devices:
        return False
    if graphs is None:
        return os.environ.get(ENV, "1").strip().lower() not in _FALSE
    return bool(graphs)


def _capture_cuda(fn: Callable, device: torch.device, kernels):
    """fn(kernels)'s launches as a torch.cuda.CUDAGraph, captured on a side stream with the
    thread_local error mode (other threads' CUDA calls do not break it), without the
    synchronize / gc.collect / empty_cache that torch.cuda.graph does on entry."""
    cur = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(cur)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), torch.cuda.stream(side):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            fn(kernels)
        finally:
            graph.capture_end()
    cur.wait_stream(side)
    return graph


class _NoOps(TorchDispatchMode):
    """Fails on any tensor operation that is not a view: a captured body only launches."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            raise RuntimeError(
                f"tensor operation {func} during a graph capture (it would "
                "allocate or run once at capture, not at each replay)"
            )
        return func(*args, **(kwargs or {}))


class Recorder:
    """A CPU stand-in for torch.cuda.CUDAGraph (the tests' capture): ``Recorder(fn, device,
    kernels)`` runs fn with a proxy of the kernels module that records each launch (kernel
    name, grid, arguments) without running it, under a guard that fails on any tensor
    operation; ``replay()`` runs exactly the recorded launches with the real kernels, with
    the same tensors and the same Python values, as a graph replays over the same addresses."""

    captures = 0

    def __init__(self, fn: Callable, device, kernels):
        self.kernels, self.launches = kernels, []
        rec = self

        class _Proxy:
            def __getattr__(self, name):
                class _K:
                    def __getitem__(self, grid):
                        return lambda *a, **kw: rec.launches.append((name, grid, a, kw))

                return _K()

        with _NoOps():
            fn(_Proxy())
        Recorder.captures += 1

    def replay(self) -> None:
        for name, grid, a, kw in self.launches:
            getattr(self.kernels, name)[grid](*a, **kw)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaNs with the same payload compare equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        it = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.contiguous().view(it), b.contiguous().view(it)
    return torch.equal(a, b)


def _nbytes(bufs: dict) -> int:
    seen = {id(t): t for t in bufs.values()}  # aliases count once
    return sum(t.numel() * t.element_size() for t in seen.values())


class _Entry:
    __slots__ = ("static", "graph", "nbytes", "stream")

    def __init__(self, static, graph, nbytes, stream):
        self.static, self.graph, self.nbytes, self.stream = static, graph, nbytes, stream


def _stream_of(device: torch.device):
    return torch.cuda.current_stream(device) if device.type == "cuda" else None


def eager(loop, kernels):
    """The loop on fresh buffers, every launch from Python (the CPU path, and the fallback)."""
    s = loop.alloc()
    loop.begin(s)
    for i, (t0, n) in enumerate(loop.chunks()):
        loop.load(s, t0, n, i == 0)
        with loop.phase():
            loop.launches(kernels, s, n)
        loop.store(s, t0, n)
    return loop.end(s, kernels)


class GraphCache:
    """Captured chunk loops by key, least recently used first out. ``capture(fn, device,
    kernels)`` returns an object with ``replay()``; the tests pass ``Recorder``."""

    def __init__(
        self,
        capture: Callable = _capture_cuda,
        max_bytes: int | None = None,
        max_entries: int | None = None,
        devices: tuple[str, ...] = ("cuda",),
    ):
        self.capture = capture
        self.devices = devices  # device types it serves (a CPU stand-in in the tests)
        self._max_bytes, self._max_entries = max_bytes, max_entries
        self._entries: OrderedDict = OrderedDict()
        self._eager: OrderedDict = OrderedDict()  # key -> why it runs eagerly
        self._uses: OrderedDict = OrderedDict()  # keys used once, not captured yet
        self._lock = threading.RLock()
        self.stats: Counter = Counter()

    # -- settings ----------------------------------------------------------------------
    def max_bytes(self, device: torch.device) -> int:
        if self._max_bytes is not None:
            return self._max_bytes
        if os.environ.get(ENV_MAX_BYTES):
            return int(os.environ[ENV_MAX_BYTES])
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory // 8
        return 1 << 30

    def max_entries(self) -> int:
        if self._max_entries is not None:
            return self._max_entries
        return int(os.environ.get(ENV_MAX_ENTRIES, "8"))

    # -- bookkeeping -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def eager_keys(self) -> dict:
        return dict(self._eager)

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                self._evict_one()
            self._eager.clear()
            self._uses.clear()

    def _evict_one(self) -> None:
        _, e = self._entries.popitem(last=False)
        if e.stream is not None:
            e.stream.synchronize()  # its last replay may still use the buffers we free
        self.stats["evicted"] += 1

    def _mark_eager(self, k: tuple, why: str, report: bool = False) -> None:
        self._eager[k] = why
        while len(self._eager) > 64:
            self._eager.popitem(last=False)
        self.stats["eager_keys"] += 1
        tail = f"; {REPORT}" if report else ""
        warnings.warn(
            f"surnn: CUDA graph not used for {k[:5]}: {why}; eager launch loop{tail}",
            RuntimeWarning,
            stacklevel=4,
        )

    # -- the call ----------------------------------------------------------------------
    def run(self, loop, kernels):
        """The loop's results, replayed from this key's graph (captured on its second use),
        or None when this key runs eagerly (the caller then does it)."""
        with self._lock, torch.no_grad():
            k = loop.key()
            if k in self._eager:
                self.stats["eager"] += 1
                return None
            e = self._entries.get(k)
            if e is not None:
                self._entries.move_to_end(k)
                self.stats["replayed"] += 1
                return self._replay_all(e, loop, kernels, first_done=False)
            if k not in self._uses:
                self._uses[k] = True
                while len(self._uses) > 256:
                    self._uses.popitem(last=False)
                self.stats["first_use"] += 1
                return None
            del self._uses[k]
            return self._build(k, loop, kernels)

    def _replay_all(self, e: _Entry, loop, kernels, first_done: bool):
        s = e.static
        cur = _stream_of(loop.dev)
        if e.stream is not None and cur is not None and e.stream != cur:
            cur.wait_stream(e.stream)  # the last replay, on another stream, used the buffers
        if not first_done:
            loop.begin(s)
        for i, (t0, n) in enumerate(loop.chunks()):
            if i == 0 and first_done:
                continue
            loop.load(s, t0, n, i == 0)
            with loop.phase():
                e.graph.replay()
            loop.store(s, t0, n)
        e.stream = cur
        return loop.end(s, kernels)

    def _build(self, k, loop, kernels):
        device = loop.dev
        nbytes = _nbytes(
            loop.alloc(lambda shape, dtype, dev: torch.empty(shape, dtype=dtype, device="meta"))
        )
        limit = self.max_bytes(device)
        if nbytes > limit:
            self._mark_eager(
                k,
                f"its buffers ({nbytes / 2**20:.0f} MiB) exceed the budget "
                f"({limit / 2**20:.0f} MiB, ${ENV_MAX_BYTES})",
            )
            return None
        while self._entries and (
            len(self._entries) >= self.max_entries() or self.nbytes() + nbytes > limit
        ):
            self._evict_one()
        try:
            # static buffers made under inference mode would be inference tensors, which a
            # later call outside it could not copy into
            with torch.inference_mode(False), torch.no_grad():
                static = loop.alloc()
        except torch.OutOfMemoryError:
            self._mark_eager(k, f"no memory for its buffers ({nbytes / 2**20:.0f} MiB)")
            return None
        loop.begin(static)
        t0, n = loop.chunks()[0]
        loop.load(static, t0, n, True)
        before = {m: static[m].clone() for m in loop.written}
        loop.launches(kernels, static, loop.C)  # eager warm-up over the whole chunk
        ref = {m: static[m].clone() for m in loop.compared}
        for m, v in before.items():
            static[m].copy_(v)
        try:
            graph = self.capture(lambda kk: loop.launches(kk, static, loop.C), device, kernels)
            graph.replay()
            same = all(_same_bits(ref[m], static[m]) for m in loop.compared)
        except Exception as err:  # capture is best effort: the eager loop stands
            self._mark_eager(k, f"capture failed ({type(err).__name__}: {err})", report=True)
            return None
        if not same:
            self._mark_eager(
                k, "the replay did not reproduce the eager run bit for bit", report=True
            )
            return None
        e = _Entry(static, graph, nbytes, None)
        self._entries[k] = e
        self.stats["captured"] += 1
        loop.store(static, t0, n)
        return self._replay_all(e, loop, kernels, first_done=True)


CACHE = GraphCache()


def run(loop, graphs: bool, kernels):
    """The loop's results: replayed from CACHE when ``graphs`` and possible, else eagerly on
    fresh buffers (the CPU / interpreter path, and the fallback)."""
    cache = CACHE
    dev = loop.dev
    if (
        graphs
        and dev.type in cache.devices
        and not (dev.type == "cuda" and torch.cuda.is_current_stream_capturing())
    ):
        res = cache.run(loop, kernels)
        if res is not None:
            return res
        cache.stats["eager_calls"] += 1
    return eager(loop, kernels)
