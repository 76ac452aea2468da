"""CUDA graphs for the Triton step loops (forward: T launches; backward: 2T).

NOT RUN ON A GPU YET: no GPU was available when this was written. Its plumbing (static
buffers, copy-in, zeroing, ping-pong, copies out, cache bounds, fallbacks) is tested on
the CPU with the Triton interpreter and a stand-in graph that replays the captured body
(tests/surnn/test_triton_graphs.py); the real capture and replay are tested by that file's
CUDA-only tests and timed by scripts/gpu_check.sh, neither of which has run yet.

The eager path launches one Triton kernel per step from Python (tens of microseconds
each, so 16k steps cost ~0.5 s of host time per layer and direction). Here the whole loop
of a (kind, shapes, dtypes, strides, device) key is captured once into a
torch.cuda.CUDAGraph over static buffers and replayed: per call, the inputs are copied
into the static buffers (one device copy each), the graph runs, and the results are
copied out (a graph's buffers are overwritten by its next replay, so nothing returned
aliases them). The schedule needs no key of its own: the step order, active counts, gate
and lengths are device tensors that the kernels read, so one graph serves every schedule
of a shape (the body re-zeroes the buffers inactive tiles never write).

First call of a key: the loop runs eagerly on the static buffers (this also compiles and
loads the kernels, which cannot happen during capture), then it is captured and replayed
once, and the replay must reproduce the eager results bit for bit; if it does not, or
capture raises, the key is marked eager for the rest of the process (a warning says why)
and the eager results are returned. Keys whose static buffers exceed the budget run
eagerly. Inside another capture (torch.compile mode="reduce-overhead", a user's graph)
the loop runs eagerly, so the outer graph records the launches itself.

Settings (read at each call):
  SURNN_CUDA_GRAPHS=0              eager launch loop always (default 1: graphs on CUDA);
                                   su_gru_triton(..., graphs=True/False) overrides it.
  SURNN_CUDA_GRAPHS_MAX_BYTES=N    static-buffer budget of the whole cache (default: 1/8
                                   of the device's memory); least recently used evicted.
  SURNN_CUDA_GRAPHS_MAX_ENTRIES=N  graphs kept (default 8).
The buffers cost memory for as long as a graph is cached: a training step of B=64,
T=1024, D=H=1024 in bf16 keeps ~1.6 GB (forward) + ~3.5 GB (backward) per layer shape
(layers of one shape share them).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable

import torch

ENV = "SURNN_CUDA_GRAPHS"
ENV_MAX_BYTES = "SURNN_CUDA_GRAPHS_MAX_BYTES"
ENV_MAX_ENTRIES = "SURNN_CUDA_GRAPHS_MAX_ENTRIES"
_FALSE = ("0", "false", "no", "off")


def wanted(x: torch.Tensor, graphs: bool | None) -> bool:
    """Whether to try the graph path: CUDA tensors, and ``graphs`` (None: $SURNN_CUDA_GRAPHS,
    default on)."""
    if x.device.type not in CACHE.devices:
        return False
    if graphs is None:
        return os.environ.get(ENV, "1").strip().lower() not in _FALSE
    return bool(graphs)


def _capture_cuda(fn: Callable[[], None], device: torch.device):
    """fn's launches as a torch.cuda.CUDAGraph (captured on a side stream; thread_local
    error mode, so other threads' CUDA calls do not break the capture)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), torch.cuda.graph(graph, capture_error_mode="thread_local"):
        fn()
    return graph


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaNs with the same payload compare equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        it = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.contiguous().view(it), b.contiguous().view(it)
    return torch.equal(a, b)


class _Entry:
    __slots__ = ("static", "graph", "nbytes", "stream")

    def __init__(self, static, graph, nbytes, stream):
        self.static, self.graph, self.nbytes, self.stream = static, graph, nbytes, stream


def _stream_of(t: torch.Tensor):
    return torch.cuda.current_stream(t.device) if t.is_cuda else None


class GraphCache:
    """Captured step loops by key, least recently used first out. ``capture(fn, device)``
    returns an object with ``replay()``; tests pass a stand-in to run on the CPU."""

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
    @staticmethod
    def key(kind: tuple, inputs: dict[str, torch.Tensor]) -> tuple:
        """kind + device + every input's name, shape, strides and dtype (not its values:
        the graph reads them from the static copies)."""
        dev = next(iter(inputs.values())).device
        return (
            *kind,
            str(dev),
            *((n, tuple(t.shape), tuple(t.stride()), t.dtype) for n, t in sorted(inputs.items())),
        )

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

    def _evict_one(self) -> None:
        _, e = self._entries.popitem(last=False)
        if e.stream is not None:
            e.stream.synchronize()  # its last replay may still use the buffers we free
        self.stats["evicted"] += 1

    def _mark_eager(self, k: tuple, why: str) -> None:
        self._eager[k] = why
        while len(self._eager) > 64:
            self._eager.popitem(last=False)
        self.stats["eager_keys"] += 1
        warnings.warn(
            f"surnn: CUDA graph not used for {k[:2]}: {why}; eager launch loop",
            RuntimeWarning,
            stacklevel=3,
        )

    # -- the call ----------------------------------------------------------------------
    def run(self, kind, inputs, alloc, body, finish):
        """finish(static, True) after replaying the graph of this key (captured on first
        use), or None when this key runs eagerly (the caller then does it)."""
        # inference_mode(False): static buffers made under inference mode would be inference
        # tensors, which a later call outside it could not copy into
        with self._lock, torch.inference_mode(False):
            k = self.key(kind, inputs)
            if k in self._eager:
                self.stats["eager"] += 1
                return None
            e = self._entries.get(k)
            if e is None:
                return self._build(k, inputs, alloc, body, finish)
            self._entries.move_to_end(k)
            self._replay(e, inputs)
            self.stats["replayed"] += 1
            return finish(e.static, True)

    def _replay(self, e: _Entry, inputs) -> None:
        any_t = next(iter(inputs.values()))
        cur = _stream_of(any_t)
        if e.stream is not None and cur is not None and e.stream != cur:
            cur.wait_stream(e.stream)  # the last replay, on another stream, used the buffers
        for n, t in inputs.items():
            e.static[n].copy_(t)
        e.graph.replay()
        e.stream = cur

    def _build(self, k, inputs, alloc, body, finish):
        device = next(iter(inputs.values())).device
        meta = {n: torch.empty_like(t, device="meta") for n, t in inputs.items()}
        meta.update(alloc(meta))  # sized on the meta device: nothing allocated yet
        nbytes = sum(t.numel() * t.element_size() for t in meta.values())
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
            static = {n: torch.empty_like(t) for n, t in inputs.items()}
            static.update(alloc(static))
        except torch.OutOfMemoryError:
            self._mark_eager(k, f"no memory for its buffers ({nbytes / 2**20:.0f} MiB)")
            return None
        for n, t in inputs.items():
            static[n].copy_(t)
        body(static)  # eager warm-up: compiles/loads the kernels (not allowed in capture)
        ref = finish(static, True)
        try:
            graph = self.capture(lambda: body(static), device)
            graph.replay()
            got = finish(static, True)
            same = all(_same_bits(a, b) for a, b in zip(ref, got))
        except Exception as err:  # capture is best effort: the eager result stands
            self._mark_eager(k, f"capture failed ({type(err).__name__}: {err})")
            return ref
        if not same:
            self._mark_eager(k, "the replay did not reproduce the eager run bit for bit")
            return ref
        stream = _stream_of(next(iter(inputs.values())))
        self._entries[k] = _Entry(static, graph, nbytes, stream)
        self.stats["captured"] += 1
        return got


CACHE = GraphCache()


def run(kind: tuple, inputs: dict, alloc: Callable, body: Callable, finish: Callable, graphs: bool):
    """The step loop ``body`` over ``inputs`` and the buffers ``alloc(inputs)`` makes, then
    ``finish(tensors, graphed)``: replayed from CACHE when ``graphs`` and possible, else
    eagerly on fresh buffers (the CPU / interpreter path, and the fallback)."""
    x = next(iter(inputs.values()))
    cache = CACHE
    if (
        graphs
        and x.device.type in cache.devices
        and not (x.is_cuda and torch.cuda.is_current_stream_capturing())
    ):
        res = cache.run(kind, inputs, alloc, body, finish)
        if res is not None:
            return res
        cache.stats["eager_calls"] += 1
    s = {**inputs, **alloc(inputs)}
    body(s)
    return finish(s, False)
