"""CUDA graphs of the Triton chunk loops (surnn/ops/triton/graphs.py).

On the CPU (always): the graph path's plumbing with the Triton interpreter and
``graphs.Recorder``, the stand-in for torch.cuda.CUDAGraph that keeps only the launches of a
capture (kernel, grid, arguments) and replays exactly those, and fails on any tensor
operation during the capture. Graph and eager must agree bit for bit (forward and
gradients) across sequence lengths (one graph serves every T), schedules and lengths; the
capture happens on a key's second use; results never alias the static buffers; the cache is
bounded; over-budget keys, failed captures and replays that differ fall back to the eager
loop. Buffers are NaN-filled (loops.FILL). On CUDA (marked gpu, skipped without one; no GPU
run is recorded): the real torch.cuda.CUDAGraph capture and replay against eager.
"""

from __future__ import annotations

import pytest
import torch

from tests.fixtures import corrupting_recorder, small_triton_machine, triton_interpreter_unless_cuda

HAS_CUDA = torch.cuda.is_available()
triton_interpreter_unless_cuda()  # before the kernels are imported

from surnn.ops.triton import graphs, launch, loops  # noqa: E402
from surnn.ops.triton.op import su_gru_triton  # noqa: E402

DEV = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def poisoned_small_machine(monkeypatch):
    """NaN-filled buffers; chunks of 2 steps (so a call spans several chunks and a graph
    replays several times), 16x16x16 tiles, 6 SMs (split-K)."""
    monkeypatch.setattr(loops, "FILL", float("nan"))
    small_triton_machine(monkeypatch.setattr)
    monkeypatch.setattr(launch, "C_MAX", 2)


def make_case(B, T, D, H, per_sample=False, seed=0, rate=0.35, dtype=torch.float32, dev=DEV):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*s, scale=0.4):
        return (torch.randn(*s, generator=gen) * scale).to(dev, dtype).requires_grad_()

    x, h0 = rnd(B, T, D, scale=1.0), rnd(B, H, scale=1.0)
    w = [rnd(3 * H, D), rnd(3 * H, H), rnd(3 * H), rnd(3 * H)]
    u = torch.rand((B, T, H) if per_sample else (T, H), generator=gen)
    g = (u < rate).to(dev, dtype).requires_grad_()
    active = (u < rate + 0.25).to(dev)
    lens = torch.randint(1, T + 1, (B,), generator=gen).to(dev)
    return x, h0, w, g, active, lens


def run(case, graphs_flag, grad_seed=1):
    """(out, h, dx, dh0, dw_ih, dw_hh, db_ih, db_hh, dg)."""
    x, h0, w, g, active, lens = case
    out, h = su_gru_triton(x, h0, *w, g, active, lens, graphs=graphs_flag)
    gen = torch.Generator().manual_seed(grad_seed)
    weights = torch.randn(out.shape, generator=gen).to(out.device, out.dtype)
    loss = (out.float() * weights.float()).sum() + (h.float() ** 2).sum()
    grads = torch.autograd.grad(loss, [x, h0, *w, g])
    return [out.detach(), h.detach(), *grads]


def assert_same_bits(a_list, b_list):
    names = ["out", "h", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dg"]
    for name, a, b in zip(names, a_list, b_list, strict=True):
        assert graphs._same_bits(a, b), f"{name}: graph and eager differ"
        assert not a.is_floating_point() or torch.isfinite(a).all(), f"{name}: not finite"


@pytest.fixture
def cpu_cache(monkeypatch):
    """graphs.CACHE replaced by one that serves CPU tensors with the Recorder stand-in."""
    cache = graphs.GraphCache(capture=graphs.Recorder, devices=("cpu",))
    monkeypatch.setattr(graphs, "CACHE", cache)
    return cache


needs_cpu = pytest.mark.skipif(HAS_CUDA, reason="the stand-in runs on the CPU interpreter")


@needs_cpu
@pytest.mark.parametrize("per_sample,B,Ts", [(False, 17, (3, 2, 4)), (True, 3, (4, 1, 3))])
def test_one_graph_serves_every_length(cpu_cache, per_sample, B, Ts):
    """First call of a key: eager. Second: capture (checked against its eager warm-up) and
    replay. Then every other T, schedule and set of lengths of the same shapes replays the
    same two graphs (forward with saving, backward), bit for bit equal to the eager loop."""
    D, H = 3, 24
    for i, T in enumerate(Ts):
        case = make_case(B, T, D, H, per_sample, seed=i, rate=0.2 + 0.15 * i)
        assert_same_bits(run(case, True), run(case, False))
        if i == 0:
            assert cpu_cache.stats["captured"] == 0 and cpu_cache.stats["first_use"] == 2
    assert cpu_cache.stats["captured"] == 2 and len(cpu_cache) == 2
    assert cpu_cache.stats["replayed"] == 2 * (len(Ts) - 2) and not cpu_cache.eager_keys()


@needs_cpu
def test_inference_has_its_own_key_and_matches(cpu_cache):
    with torch.no_grad():
        for T in (5, 6, 3):
            case = make_case(3, T, 4, 20, seed=T)
            a = su_gru_triton(*case[:2], *case[2], *case[3:], graphs=True)
            b = su_gru_triton(*case[:2], *case[2], *case[3:], graphs=False)
            assert all(graphs._same_bits(p, q) for p, q in zip(a, b))
    assert cpu_cache.stats["captured"] == 1 and cpu_cache.stats["replayed"] == 1


@needs_cpu
def test_results_do_not_alias_the_static_buffers(cpu_cache):
    run(make_case(3, 5, 4, 16, seed=0), True)  # first use
    first = run(make_case(3, 5, 4, 16, seed=1), True)  # captured
    kept = [t.clone() for t in first]
    run(make_case(3, 4, 4, 16, seed=2), True)  # same key: replays over the same buffers
    assert cpu_cache.stats["replayed"] == 2
    assert all(torch.equal(a, b) for a, b in zip(first, kept))


@needs_cpu
def test_a_graph_made_under_inference_mode_serves_later_calls(cpu_cache):
    case = make_case(3, 5, 4, 16)
    args = (
        case[0].detach(),
        case[1].detach(),
        *[t.detach() for t in case[2]],
        case[3].detach(),
        case[4],
        case[5],
    )
    with torch.inference_mode():
        su_gru_triton(*args, graphs=True)
        a = su_gru_triton(*args, graphs=True)
    with torch.no_grad():
        b = su_gru_triton(*args, graphs=True)
        c = su_gru_triton(*args, graphs=False)
    assert cpu_cache.stats["captured"] == 1 and cpu_cache.stats["replayed"] == 1
    assert all(graphs._same_bits(p, q) for p, q in zip(a, c))
    assert all(graphs._same_bits(p, q) for p, q in zip(b, c))


@needs_cpu
def test_capture_fails_on_a_tensor_operation(cpu_cache, monkeypatch):
    """A captured body that allocates (or runs any tensor op) fails the capture: the key
    runs eagerly, with a warning that says how to report it."""
    real = loops.Fwd.launches

    def allocating(self, k, s, n):
        torch.zeros(1)  # a real graph would keep this allocation, run once at capture
        real(self, k, s, n)

    monkeypatch.setattr(loops.Fwd, "launches", allocating)
    with torch.no_grad():
        case = make_case(3, 5, 4, 16)
        args = (*case[:2], *case[2], *case[3:])
        su_gru_triton(*args, graphs=True)
        with pytest.warns(RuntimeWarning, match="capture failed.*tensor operation.*report"):
            a = su_gru_triton(*args, graphs=True)
        b = su_gru_triton(*args, graphs=False)
    assert all(graphs._same_bits(p, q) for p, q in zip(a, b))
    assert len(cpu_cache) == 0 and len(cpu_cache.eager_keys()) == 1


@needs_cpu
def test_the_stand_in_replays_what_was_captured(cpu_cache, monkeypatch):
    """A body that hands a kernel a per-chunk tensor other than the static buffers (here:
    the lengths made afresh by each chunk's load) works eagerly but not as a graph, which
    keeps the tensor it captured; the stand-in shows it as a real graph would (a stand-in
    that re-ran the Python body hid it)."""
    real_load, real_launches = loops.Fwd.load, loops.Fwd.launches

    def load(self, s, t0, n, first):
        real_load(self, s, t0, n, first)
        self.fresh_lrel = self.lens - t0  # a new tensor per chunk

    def launches(self, k, s, n):
        real_launches(self, k, {**s, "lrel": self.fresh_lrel}, n)

    monkeypatch.setattr(loops.Fwd, "load", load)
    monkeypatch.setattr(loops.Fwd, "launches", launches)
    with torch.no_grad():
        case = make_case(4, 6, 4, 16, seed=3)
        case[5][:] = torch.tensor([6, 3, 1, 5])
        args = (*case[:2], *case[2], *case[3:])
        su_gru_triton(*args, graphs=True)  # first use: eager
        a = su_gru_triton(*args, graphs=True)  # captured on chunk 0, replayed on 1 and 2
        b = su_gru_triton(*args, graphs=False)
    assert cpu_cache.stats["captured"] == 1
    assert not graphs._same_bits(a[0], b[0])


@needs_cpu
def test_cache_is_bounded_least_recently_used_out(monkeypatch):
    cache = graphs.GraphCache(capture=graphs.Recorder, devices=("cpu",), max_entries=2)
    monkeypatch.setattr(graphs, "CACHE", cache)
    with torch.no_grad():
        for B in (2, 2, 3, 3, 4, 4, 2, 2):
            case = make_case(B, 4, 4, 8)
            su_gru_triton(*case[:2], *case[2], *case[3:], graphs=True)
    assert len(cache) == 2 and cache.stats["evicted"] == 2 and cache.stats["captured"] == 4
    cache.clear()
    assert len(cache) == 0


def second_use_runs_eager(monkeypatch, match: str, capture, **cache_kw):
    """A key's first use (eager) and second (where it would be captured) through a cache
    with ``capture``: the second warns ``match`` and gives the eager result bit for bit.
    Returns the cache and the case."""
    cache = graphs.GraphCache(capture=capture, devices=("cpu",), **cache_kw)
    monkeypatch.setattr(graphs, "CACHE", cache)
    case = make_case(3, 5, 4, 16)
    run(case, True)
    with pytest.warns(RuntimeWarning, match=match):
        got = run(case, True)
    assert_same_bits(got, run(case, False))
    return cache, case


@needs_cpu
def test_over_budget_runs_eager(monkeypatch):
    cache, _ = second_use_runs_eager(
        monkeypatch, "exceed the budget", graphs.Recorder, max_bytes=1000
    )
    assert len(cache) == 0 and cache.stats["captured"] == 0 and len(cache.eager_keys()) == 2


@needs_cpu
def test_out_of_memory_for_the_static_buffers_runs_eager(cpu_cache, monkeypatch):
    real, calls = loops.Fwd.alloc, []

    def alloc(self, e=loops.empty):
        calls.append(e)
        if len(calls) == 3:  # first use: eager (1); second: meta sizing (2), static (3)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, e)

    monkeypatch.setattr(loops.Fwd, "alloc", alloc)
    case = make_case(3, 5, 4, 16)
    args = (*case[:2], *case[2], *case[3:])
    with torch.no_grad():
        su_gru_triton(*args, graphs=True)
        with pytest.warns(RuntimeWarning, match="no memory"):
            a = su_gru_triton(*args, graphs=True)
        b = su_gru_triton(*args, graphs=False)
    assert all(graphs._same_bits(p, q) for p, q in zip(a, b))
    assert len(cpu_cache) == 0


@needs_cpu
def test_failed_capture_falls_back_to_eager_for_good(monkeypatch):
    def broken(fn, device, kernels):
        raise RuntimeError("operation not permitted when stream is capturing")

    cache, case = second_use_runs_eager(monkeypatch, "capture failed", broken)
    run(case, True)  # the keys stay eager: no second capture attempt
    assert cache.stats["eager"] == 2 and len(cache) == 0


@needs_cpu
def test_replay_that_differs_is_not_used(monkeypatch):
    cache, _ = second_use_runs_eager(monkeypatch, "bit for bit.*report", corrupting_recorder())
    assert len(cache) == 0


def test_recorder_keeps_the_captured_launch_arguments():
    """Recorder replays the launches as captured: kernel, grid, the same tensors, the Python
    values of the capture, whatever the body would do now."""
    calls = []

    class Kernels:
        class k:
            def __class_getitem__(cls, grid):
                return lambda *a, **kw: calls.append((grid, a, kw))

    t = torch.zeros(2)
    state = {"n": 3}
    rec = graphs.Recorder(lambda k: k.k[(state["n"],)](t, state["n"], X=1), "cpu", Kernels)
    assert calls == []  # nothing runs at capture
    state["n"] = 7
    rec.replay()
    assert calls == [((3,), (t, 3), {"X": 1})] and calls[0][1][0] is t
    with pytest.raises(RuntimeError, match="tensor operation"):
        graphs.Recorder(lambda k: torch.empty(3), "cpu", Kernels)


def test_option_and_environment(monkeypatch, cpu_cache):
    x = torch.zeros(1)
    monkeypatch.delenv(graphs.ENV, raising=False)
    assert graphs.wanted(x, None) and graphs.wanted(x, True) and not graphs.wanted(x, False)
    monkeypatch.setenv(graphs.ENV, "0")
    assert not graphs.wanted(x, None) and graphs.wanted(x, True)
    monkeypatch.setattr(graphs, "CACHE", graphs.GraphCache())  # the real one: CUDA only
    assert not graphs.wanted(x, True)


# -- on a GPU ------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_sample,B", [(False, 8), (True, 5), (False, 40)])
def test_cuda_graph_matches_eager_bit_for_bit(dtype, per_sample, B):
    """Real capture and replay: forward and gradients equal to the eager launch loop, for
    the capture call and for replays with other lengths and schedules of the same shapes."""
    graphs.CACHE.clear()
    graphs.CACHE.stats.clear()
    D, H = 24, 72
    for i, T in enumerate((33, 17, 40, 9)):
        case = make_case(B, T, D, H, per_sample, seed=i, rate=0.1 + 0.2 * i, dtype=dtype)
        assert_same_bits(run(case, True), run(case, False))
    torch.cuda.synchronize()
    assert not graphs.CACHE.eager_keys(), graphs.CACHE.eager_keys()
    assert graphs.CACHE.stats["captured"] == 2 and graphs.CACHE.stats["replayed"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_graph_results_survive_the_next_replay():
    graphs.CACHE.clear()
    run(make_case(8, 17, 16, 64, seed=0), True)
    first = run(make_case(8, 17, 16, 64, seed=1), True)
    kept = [t.clone() for t in first]
    run(make_case(8, 13, 16, 64, seed=2), True)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(first, kept))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_inside_an_outer_capture_the_loop_is_recorded_eagerly():
    """Under a user's (or torch.compile's) capture the op must not start its own."""
    graphs.CACHE.clear()
    graphs.CACHE.stats.clear()
    case = make_case(4, 9, 8, 32, seed=0)
    args = [t.detach() for t in (case[0], case[1], *case[2], case[3])]
    x, h0, wi, wh, bi, bh, g = args
    with torch.no_grad():
        ref = su_gru_triton(x, h0, wi, wh, bi, bh, g, case[4], case[5], graphs=False)
        su_gru_triton(x, h0, wi, wh, bi, bh, g, case[4], case[5], graphs=True)  # warm-up
        outer = torch.cuda.CUDAGraph()
        with torch.cuda.graph(outer):
            out = su_gru_triton(x, h0, wi, wh, bi, bh, g, case[4], case[5], graphs=True)
        outer.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
