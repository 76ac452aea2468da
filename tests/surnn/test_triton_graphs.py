"""CUDA graphs of the Triton step loops (surnn/ops/triton/graphs.py).

On the CPU (always): the graph path's plumbing, with the Triton interpreter and a stand-in
"graph" whose replay re-runs the captured body over the same static buffers: graph and
eager must agree bit for bit (forward and gradients), across schedules, without results
aliasing the static buffers; the cache is bounded; over-budget keys, failed captures and
replays that differ fall back to the eager loop.
On CUDA (marked gpu, skipped without one; NOT RUN YET, no GPU was available): the real
torch.cuda.CUDAGraph capture and replay against the eager loop, bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from tests.fixtures import triton_interpreter_unless_cuda

HAS_CUDA = torch.cuda.is_available()
triton_interpreter_unless_cuda()  # before the kernels are imported

from surnn.ops.triton import graphs  # noqa: E402
from surnn.ops.triton.op import su_gru_triton  # noqa: E402

DEV = "cuda" if HAS_CUDA else "cpu"


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


class ReplayBody:
    """Stand-in for torch.cuda.CUDAGraph on the CPU: replay() re-runs the captured body
    (over the same static tensors, as a graph replays over the same addresses)."""

    captures = 0

    def __init__(self, fn, device):
        self.fn = fn
        ReplayBody.captures += 1

    def replay(self):
        self.fn()


@pytest.fixture
def cpu_cache(monkeypatch):
    """graphs.CACHE replaced by one that serves CPU tensors with the stand-in graph."""
    cache = graphs.GraphCache(capture=ReplayBody, devices=("cpu",))
    monkeypatch.setattr(graphs, "CACHE", cache)
    return cache


needs_cpu = pytest.mark.skipif(HAS_CUDA, reason="the stand-in runs on the CPU interpreter")


@needs_cpu
@pytest.mark.parametrize("per_sample,B", [(False, 5), (True, 3), (False, 17)])
def test_graph_path_matches_eager_bit_for_bit(cpu_cache, per_sample, B):
    """First call captures (and checks itself), the next ones replay: each schedule of
    the same shapes (different gates, masks, lengths, values) reuses the one graph."""
    T, D, H = 6, 5, 40
    for seed in range(3):
        case = make_case(B, T, D, H, per_sample, seed=seed, rate=0.2 + 0.2 * seed)
        assert_same_bits(run(case, True), run(case, False))
    assert cpu_cache.stats["captured"] == 2  # forward (saving) and backward
    assert cpu_cache.stats["replayed"] == 4 and not cpu_cache.eager_keys()
    with torch.no_grad():  # inference forward: its own key (SAVE=False)
        case = make_case(B, T, D, H, per_sample, seed=7)
        a = su_gru_triton(*case[:2], *case[2], *case[3:], graphs=True)
        b = su_gru_triton(*case[:2], *case[2], *case[3:], graphs=False)
    assert all(graphs._same_bits(p, q) for p, q in zip(a, b))
    assert len(cpu_cache) == 3


@needs_cpu
def test_results_do_not_alias_the_static_buffers(cpu_cache):
    first = run(make_case(3, 5, 4, 16, seed=0), True)
    kept = [t.clone() for t in first]
    run(make_case(3, 5, 4, 16, seed=1), True)  # same key: replays over the same buffers
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
        a = su_gru_triton(*args, graphs=True)
    with torch.no_grad():
        b = su_gru_triton(*args, graphs=True)
        c = su_gru_triton(*args, graphs=False)
    assert cpu_cache.stats["captured"] == 1 and cpu_cache.stats["replayed"] == 1
    assert all(graphs._same_bits(p, q) for p, q in zip(a, c))
    assert all(graphs._same_bits(p, q) for p, q in zip(b, c))


@needs_cpu
def test_cache_is_bounded_least_recently_used_out(monkeypatch):
    cache = graphs.GraphCache(capture=ReplayBody, devices=("cpu",), max_entries=2)
    monkeypatch.setattr(graphs, "CACHE", cache)
    with torch.no_grad():
        for B in (2, 3, 4, 2):
            case = make_case(B, 4, 4, 8)
            su_gru_triton(*case[:2], *case[2], *case[3:], graphs=True)
    assert len(cache) == 2 and cache.stats["evicted"] == 2 and cache.stats["captured"] == 4
    cache.clear()
    assert len(cache) == 0


@needs_cpu
def test_over_budget_runs_eager(monkeypatch):
    cache = graphs.GraphCache(capture=ReplayBody, devices=("cpu",), max_bytes=1000)
    monkeypatch.setattr(graphs, "CACHE", cache)
    case = make_case(3, 5, 4, 16)
    with pytest.warns(RuntimeWarning, match="exceed the budget"):
        got = run(case, True)
    assert_same_bits(got, run(case, False))
    assert len(cache) == 0 and cache.stats["captured"] == 0 and len(cache.eager_keys()) == 2


@needs_cpu
def test_out_of_memory_for_the_static_buffers_runs_eager(cpu_cache, monkeypatch):
    from surnn.ops.triton import op

    real, calls = op._fwd_alloc, []

    def alloc(s, save):  # the graph's buffers (the first real allocation) do not fit
        calls.append(s["x"].device.type)
        if calls.count("cpu") == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(s, save)

    monkeypatch.setattr(op, "_fwd_alloc", alloc)
    case = make_case(3, 5, 4, 16)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="no memory"):
        a = su_gru_triton(*case[:2], *case[2], *case[3:], graphs=True)
    with torch.no_grad():
        b = su_gru_triton(*case[:2], *case[2], *case[3:], graphs=False)
    assert calls[0] == "meta" and all(graphs._same_bits(p, q) for p, q in zip(a, b))
    assert len(cpu_cache) == 0


@needs_cpu
def test_failed_capture_falls_back_to_eager_for_good(monkeypatch):
    def broken(fn, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    cache = graphs.GraphCache(capture=broken, devices=("cpu",))
    monkeypatch.setattr(graphs, "CACHE", cache)
    case = make_case(3, 5, 4, 16)
    with pytest.warns(RuntimeWarning, match="capture failed"):
        got = run(case, True)
    assert_same_bits(got, run(case, False))
    run(case, True)  # the keys stay eager: no second capture attempt
    assert cache.stats["eager"] == 2 and len(cache) == 0


@needs_cpu
def test_replay_that_differs_is_not_used(monkeypatch):
    class Corrupting(ReplayBody):
        def replay(self):
            self.fn()
            (static,) = [
                c.cell_contents for c in self.fn.__closure__ if isinstance(c.cell_contents, dict)
            ]
            for t in static.values():  # the static tensors: a wrong replay
                if t.is_floating_point() and t.numel():
                    t.add_(1.0)

    cache = graphs.GraphCache(capture=Corrupting, devices=("cpu",))
    monkeypatch.setattr(graphs, "CACHE", cache)
    case = make_case(3, 5, 4, 16)
    with pytest.warns(RuntimeWarning, match="bit for bit"):
        got = run(case, True)
    assert_same_bits(got, run(case, False))
    assert len(cache) == 0


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
    the capture call and for replays with other schedules of the same shapes."""
    graphs.CACHE.clear()
    graphs.CACHE.stats.clear()
    T, D, H = 33, 24, 72
    for seed in range(3):
        case = make_case(B, T, D, H, per_sample, seed=seed, rate=0.1 + 0.3 * seed, dtype=dtype)
        assert_same_bits(run(case, True), run(case, False))
    torch.cuda.synchronize()
    assert not graphs.CACHE.eager_keys(), graphs.CACHE.eager_keys()
    assert graphs.CACHE.stats["captured"] == 2 and graphs.CACHE.stats["replayed"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_graph_results_survive_the_next_replay():
    graphs.CACHE.clear()
    first = run(make_case(8, 17, 16, 64, seed=0), True)
    kept = [t.clone() for t in first]
    run(make_case(8, 17, 16, 64, seed=1), True)
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
