"""The compiled CPU kernel (impl="compiled") against the reference oracle: values and
every gradient (x, h0, weights, biases, gate), on random scattered masks, sizes that are
no multiple of any vector or tile width, T=1, B=1, padded batches, per-sample and soft
gates; its FLOP count; its fallback to the eager path (one warning) without a compiler.

Imports only torch and surnn.ops (the package layout around it is moving)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import surnn.ops as ops
from surnn.ops import compiled, compiled_build, su_gru
from tests.fixtures import F64, ROOT, assert_close, make_case, op_gradcheck, run

needs_kernel = pytest.mark.skipif(
    not compiled.available(), reason=f"compiled kernel unavailable: {compiled._STATE['error']}"
)


@needs_kernel
@pytest.mark.parametrize("kind", ["random", "sparse", "open", "closed", "soft"])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
def test_compiled_matches_reference(kind, per_sample, lengths):
    # B=5, D=37, H=41: no multiple of the 4-sample tiles nor of the 4/8-wide vectors.
    case = make_case(5, 9, 37, 41, kind, per_sample, lengths)
    assert_close(run("compiled", case), run("reference", case), 1e-10)


@needs_kernel
@pytest.mark.parametrize("B,T,D,H", [(1, 6, 3, 29), (3, 1, 4, 6), (7, 5, 1, 50), (2, 4, 70, 9)])
def test_compiled_edge_sizes(B, T, D, H):
    """B=1 (one sample: its own tile path), T=1, D=1 (sMNIST pixels), tiny H."""
    case = make_case(B, T, D, H, "random", lengths=True, seed=B + T)
    assert_close(run("compiled", case), run("reference", case), 1e-10)


@needs_kernel
@pytest.mark.parametrize("B", [9, 1])
def test_compiled_float32_vector_paths(B):
    """fp32 (8-wide vectors, the fast exp) at sizes that run the full tiles and tails; B=1
    runs the two-neurons-at-a-time dots of a single sequence."""
    ref = make_case(B, 12, 77, 100, "sparse", lengths=True, dtype=F64, seed=3)
    x, h0, w, g, active, lens = ref

    def f32(t):
        return t.detach().float().requires_grad_()

    case = (f32(x), f32(h0), [f32(t) for t in w], f32(g), active, lens)
    assert_close(run("compiled", case), run("reference", ref), 2e-4)


@needs_kernel
@pytest.mark.parametrize("kind", ["random", "sparse", "open", "closed", "soft"])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("mode", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
def test_compiled_inference_matches_reference(kind, per_sample, mode, lengths, monkeypatch):
    """Inference (no gradient) is one C++ call: the step plan and the sweep, padded
    batches in the caller's order included. Called directly, or through the custom op when
    a dispatch mode (here FlopCounterMode) must see it."""
    calls = []
    real = compiled._infer_op
    monkeypatch.setattr(compiled, "_infer_op", lambda *a: calls.append(1) or real(*a))
    x, h0, w, g, active, lens = make_case(5, 9, 37, 41, kind, per_sample, lengths)
    assert lens is None or not torch.equal(lens, lens.sort(descending=True).values)
    with torch.no_grad(), FlopCounterMode(display=False) if mode else contextlib.nullcontext():
        got = su_gru(x, h0, *w, g, active, lens, impl="compiled")
    with torch.no_grad():
        ref = su_gru(x, h0, *w, g, active, lens, impl="reference")
    assert calls == ([1] if mode else [])
    assert_close(got, ref, 1e-10)


def _fp32_inference_on_2_threads_matches_reference(x, h0, w, g, active, lens):
    """The compiled inference of fp32 inputs on 2 threads, checked against the reference
    in float64; returns (out, h_T)."""
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            got = su_gru(x, h0, *w, g, active, lens, impl="compiled")
    finally:
        torch.set_num_threads(n)
    with torch.no_grad():
        ref = su_gru(*(t.double() for t in (x, h0, *w, g)), active, lens, impl="reference")
    assert_close(got, ref, 1e-5)
    return got


@needs_kernel
@pytest.mark.parametrize("per_sample", [False, True])
def test_compiled_padded_inference_edge_lengths(per_sample):
    """Lengths 0 (the state stays h0), longer than T, ties, and the longest last; fp32
    with 2 threads (the samples dealt to the threads in length order)."""
    x, h0, w, g, active, _ = make_case(
        9, 7, 5, 24, "sparse", per_sample, dtype=torch.float32, seed=4
    )
    lens = torch.tensor([0, 3, 9, 3, 1, 0, 6, 2, 7])
    got = _fp32_inference_on_2_threads_matches_reference(x, h0, w, g, active, lens)
    assert torch.equal(got[1][0], h0[0].detach()) and torch.equal(got[0][5, -1], h0[5].detach())


@needs_kernel
@pytest.mark.parametrize("H", [41, 64])
@pytest.mark.parametrize("lengths", [False, True])
def test_compiled_inference_streams_states_out(H, lengths):
    """Inference keeps the states in its own buffer and streams each step out (fp32 rows
    of a multiple of 8 go out with non-temporal stores, others with a copy): every row of
    out, padded samples included, per-sample gates, 2 threads."""
    x, h0, w, g, active, lens = make_case(
        11, 7, 9, H, "sparse", per_sample=True, lengths=lengths, dtype=torch.float32, seed=H
    )
    lens = lens if lengths else None
    _fp32_inference_on_2_threads_matches_reference(x, h0, w, g, active, lens)


@needs_kernel
def test_compiled_full_lengths_run_as_unpadded(monkeypatch):
    """Lengths that close nothing (every sequence as long as x: a batch of one, no
    padding) run the unpadded inference call, with the same results. Inference never
    plans in Python, a padded batch included; training does."""
    real = compiled._plan_op
    calls = []
    monkeypatch.setattr(compiled, "_plan_op", lambda *a: calls.append(a[2]) or real(*a))
    x, h0, w, g, active, _ = make_case(3, 6, 5, 9, "sparse", dtype=torch.float32, seed=2)
    with torch.no_grad():
        full = su_gru(x, h0, *w, g, active, torch.tensor([6, 6, 7]), impl="compiled")
        ref = su_gru(x, h0, *w, g, active, impl="reference")
        assert calls == []
        assert_close(full, ref, 1e-5)
        padded = torch.tensor([6, 2, 6])
        got = su_gru(x, h0, *w, g, active, padded, impl="compiled")
        assert calls == []
        assert_close(got, su_gru(x, h0, *w, g, active, padded, impl="reference"), 1e-5)
    su_gru(x, h0, *w, g, active, padded, impl="compiled")  # training: the plan
    assert len(calls) == 1 and torch.equal(calls[0], padded)


@needs_kernel
@pytest.mark.parametrize("B", [1, 6])
def test_compiled_inference_op_layouts_and_fp32(B):
    """Non-contiguous input, absent biases, no active mask (g != 0 decides), fp32 with the
    vector paths (B=1: two neurons at a time); then a second, smaller call (the plan's
    scratch is kept between calls)."""
    x, h0, w, g, _, _ = make_case(B, 12, 77, 100, "sparse", dtype=torch.float32, seed=4)
    x_t = torch.cat([x, x], -1).detach()[..., : x.shape[-1]]  # [B,T,D], strided
    assert not x_t.is_contiguous()
    with torch.no_grad():
        got = su_gru(x_t, h0, w[0], w[1], None, None, g, impl="compiled")
        ref = su_gru(
            x.double(),
            h0.double(),
            w[0].double(),
            w[1].double(),
            None,
            None,
            g.double(),
            impl="reference",
        )
        assert_close(got, ref, 2e-4)
        small = make_case(B, 3, 5, 7, "random", dtype=torch.float32, seed=5)
        xs, hs, ws, gs, acts, _ = small
        assert_close(
            su_gru(xs, hs, *ws, gs, acts, impl="compiled"),
            su_gru(xs, hs, *ws, gs, acts, impl="reference"),
            1e-5,
        )


@needs_kernel
@pytest.mark.parametrize("T,H,p", [(40, 256, 0.17), (30, 13, 0.5), (9, 67, 0.05), (5, 8, 1.0)])
def test_compiled_plan_lists_the_flagged_neurons(T, H, p):
    """The step plan (AVX2 packs 8 neurons per group, the rest one by one): every neuron
    with g != 0 or active, in order, per step; scattered masks, H no multiple of 8."""
    gen = torch.Generator().manual_seed(T + H)
    g = (torch.rand(T, H, generator=gen) < p).float() * torch.rand(T, H, generator=gen)
    act = torch.rand(T, H, generator=gen) < p / 2
    for a in (act, torch.empty(0)):
        idx, off, bs, perm = compiled._STATE["ext"].plan(g, a, torch.empty(0, dtype=torch.long), 1)
        flag = (g != 0) | (a if a.numel() else False)
        assert torch.equal(idx, flag.nonzero()[:, 1].int())
        assert torch.equal(
            off, torch.cat([torch.zeros(1, dtype=torch.long), flag.sum(1).cumsum(0)])
        )
        assert torch.equal(bs, torch.ones(T, dtype=torch.int32)) and perm.numel() == 0
    lens = torch.tensor([3, T + 2, 0, 3, 1, T])  # the rows in length order, ties in order
    idx, off, bs, perm = compiled._STATE["ext"].plan(g, act, lens, 6)
    assert torch.equal(perm.long(), torch.argsort(lens, descending=True, stable=True))
    assert torch.equal(bs.long(), (lens[None, :] > torch.arange(T)[:, None]).sum(1))


@needs_kernel
def test_compiled_thread_count_does_not_change_results():
    case = make_case(13, 8, 20, 33, "sparse", per_sample=True, lengths=True)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run("compiled", case)
        torch.set_num_threads(max(2, n))
        many = run("compiled", case)
    finally:
        torch.set_num_threads(n)
    assert_close(one, many, 1e-12)


@needs_kernel
def test_compiled_every_sample_runs_when_openmp_gives_fewer_threads():
    """OMP_THREAD_LIMIT=1 (like OMP_DYNAMIC under load, or a nested region) gives the
    kernel's parallel region fewer threads than it asks for: every sample must still be
    computed (a missing thread's samples would keep uninitialised memory)."""
    code = (
        "import torch\n"
        "from tests.fixtures import assert_close, make_case, run\n"
        "torch.set_num_threads(4)\n"
        "assert torch.get_num_threads() == 4\n"
        "case = make_case(13, 6, 9, 11, 'sparse', per_sample=True, lengths=True)\n"
        "assert_close(run('compiled', case), run('reference', case), 1e-10)\n"
    )
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_THREAD_LIMIT": "1", "PYTHONPATH": path}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]


@needs_kernel
@pytest.mark.parametrize("bad", ["active [T,H], g [B,T,H]", "g [1,T,H]", "lengths [1]"])
def test_compiled_rejects_broadcast_shapes(bad):
    """The kernel indexes by (B, T, H) without bounds checks: shapes the reference accepts
    by broadcasting are refused (the kernel would read them out of bounds, as ASan shows)."""
    x, h0, w, g, active, lens = make_case(3, 5, 4, 6, "random", per_sample=True, lengths=True)
    if bad == "active [T,H], g [B,T,H]":
        active = active[0]
    elif bad == "g [1,T,H]":
        g, active = g[:1].detach().requires_grad_(), active[:1]
    else:
        lens = lens[:1]
    with pytest.raises(RuntimeError, match="no broadcasting|expected lengths"):
        su_gru(x, h0, *w, g, active, lens, impl="compiled")


@needs_kernel
@pytest.mark.parametrize("perm", [[0, 0, 2], [0, 1, 3], [1, 0], [2, 1, 0]])
def test_compiled_checks_the_batch_permutation(perm):
    """The kernels read and write the batch through perm (its rows in length order)
    without bounds checks: anything but a permutation of the batch is refused."""
    x, h0, w, g, _, lens = make_case(3, 5, 4, 6, "random", lengths=True, dtype=torch.float32)
    idx, off, bs, _ = compiled._plan_op(g.detach(), None, lens, 3)
    args = [t.detach().contiguous() for t in (x, h0, *w, g)]
    p = torch.tensor(perm, dtype=torch.int32)
    call = compiled._STATE["ext"].forward
    if perm == [2, 1, 0]:  # a permutation: runs
        assert call(*args, idx, off, bs, p, False, 1)[0].shape == (3, 5, 6)
        return
    with pytest.raises(RuntimeError, match="perm"):
        call(*args, idx, off, bs, p, False, 1)


@needs_kernel
def test_compiled_gradcheck():
    assert op_gradcheck(su_gru, impl="compiled")


@needs_kernel
def test_compiled_no_bias_and_frozen_inputs():
    """Absent biases; only some inputs needing gradients (no dx, no dW paths)."""
    x, h0, w, g, active, lens = make_case(4, 6, 8, 10, "random", lengths=True)
    outs = {}
    for impl in ("compiled", "reference"):
        wi = w[0].detach().requires_grad_()
        out, h = su_gru(x.detach(), h0, wi, w[1].detach(), None, None, g, active, lens, impl=impl)
        gw, gh0 = torch.autograd.grad(out.sum() + h.sum(), [wi, h0])
        outs[impl] = (out, h, gw, gh0)
    for a, b in zip(outs["compiled"], outs["reference"]):
        assert (a - b).abs().max() < 1e-10


@needs_kernel
def test_compiled_flops_count_only_executed_updates():
    """Inference counts 2 * 3 * (D + H) FLOPs per executed update; a training step
    (forward and backward through the custom ops) three times that."""
    B, T, D, H = 3, 8, 5, 70
    x, h0, w, g, _, lens = make_case(B, T, D, H, "random", lengths=True, dtype=torch.float32)
    valid = torch.arange(T)[None, :] < lens[:, None]
    executed = int(((g != 0)[None] & valid[:, :, None]).sum())
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        su_gru(x, h0, *w, g, None, lens, impl="compiled")
    assert fc.get_total_flops() == 2 * 3 * (D + H) * executed
    with FlopCounterMode(display=False) as fc:
        out, h = su_gru(x, h0, *w, g, None, lens, impl="compiled")
        (out.sum() + h.sum()).backward()
    assert fc.get_total_flops() == 3 * 2 * 3 * (D + H) * executed


@needs_kernel
def test_auto_runs_the_compiled_kernel_on_cpu_unless_opted_out(monkeypatch):
    """auto on CPU: the compiled kernel by default; SURNN_AUTO_COMPILED=0 (what
    check_results sets to rerun results made before) gives the eager path."""
    code = (
        "import torch, surnn.ops as o\n"
        "print(o.AUTO_COMPILED, o.resolve_impl('auto', torch.device('cpu')))\n"
    )
    got = {}
    for value in (None, "0", "1"):
        env = {k: v for k, v in os.environ.items() if k != "SURNN_AUTO_COMPILED"}
        if value is not None:
            env["SURNN_AUTO_COMPILED"] = value
        res = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr[-2000:]
        got[value] = res.stdout.split()
    assert got == {None: ["True", "compiled"], "0": ["False", "cpu"], "1": ["True", "compiled"]}
    monkeypatch.setattr(ops, "AUTO_COMPILED", False)
    assert ops.resolve_impl("auto", torch.device("cpu")) == "cpu"


def test_auto_picks_compiled_on_cpu_for_fp32_fp64(monkeypatch):
    monkeypatch.setattr(ops, "AUTO_COMPILED", True)
    cpu = torch.device("cpu")
    assert ops.resolve_impl("auto", cpu) == "compiled"
    assert ops.resolve_impl("auto", cpu, torch.float32) == "compiled"
    assert ops.resolve_impl("auto", cpu, torch.bfloat16) == "cpu"
    assert ops.resolve_impl("cpu", cpu) == "cpu"


def test_without_a_compiler_the_eager_path_runs_with_one_warning(monkeypatch):
    """No compiler on PATH: one RuntimeWarning naming the reason, then impl='compiled'
    and 'auto' run the eager cpu path (same values)."""
    monkeypatch.delenv("SURNN_NO_COMPILED", raising=False)
    for key, value in {"tried": False, "ext": None, "error": None}.items():
        monkeypatch.setitem(compiled._STATE, key, value)
    monkeypatch.setattr(compiled_build.shutil, "which", lambda name: None)
    case = make_case(3, 5, 4, 7, "random", lengths=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run("compiled", case)
        got_auto = run("auto", case)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "no C++ compiler" in msgs[0] and "'cpu' path" in msgs[0]
    assert ops.resolve_impl("auto", torch.device("cpu")) == "cpu"
    want = run("cpu", case)
    assert_close(got, want, 1e-12)
    assert_close(got_auto, want, 1e-12)


@needs_kernel
def test_auto_leaves_only_wide_dense_training_to_the_eager_path(monkeypatch):
    """auto on CPU runs the compiled kernel at every rate, every neuron open included,
    except a call with gradients computing every update of a layer wider than
    AUTO_DENSE_GRAD_MAX_H (measured crossover); values equal the reference either way."""
    monkeypatch.setattr(ops, "AUTO_COMPILED", True)
    monkeypatch.setattr(ops, "AUTO_DENSE_GRAD_MAX_H", 6)
    calls = []
    eager = ops.su_gru_cpu
    monkeypatch.setattr(ops, "su_gru_cpu", lambda *a: calls.append(1) or eager(*a))
    for kind, H, want in [("sparse", 8, 0), ("open", 6, 0), ("open", 8, 1)]:
        calls.clear()
        case = make_case(2, 5, 4, H, kind)
        assert_close(run("auto", case), run("reference", case), 1e-10)
        assert len(calls) == want, (kind, H)
        with torch.no_grad():  # inference: always the compiled kernel
            x, h0, w, g, active, _ = case
            su_gru(x, h0, *w, g, active, impl="auto")
        assert len(calls) == want
    x, h0, w, g, active, _ = make_case(2, 5, 4, 8, "open")
    assert compiled.su_gru_compiled(x, h0, *w, g, active, None, 8) is not None
    assert compiled.su_gru_compiled(x, h0, *w, g, active, None, 7) is None


# ------------------------------------------------------------------ one build per key


@needs_kernel
def test_compiled_ops_pass_opcheck():
    """Schema, fake (shape-only) implementations and the registered autograd of the
    training forward, as the dispatcher uses them (torch.compile: the test below)."""
    x, h0, w, g, active, lens = make_case(3, 5, 4, 6, "random", lengths=True)
    idx, off, bs, perm = compiled._plan_op(g.detach(), active, lens, 3)
    torch.library.opcheck(
        torch.ops.surnn.su_gru_compiled_fwd.default,
        (x, h0, *w, g, active, idx, off, bs, perm),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )
    plain = [t.detach() for t in (x, h0, *w, g)]
    torch.library.opcheck(
        torch.ops.surnn.su_gru_compiled_infer.default,
        (*plain, active, lens),
        test_utils=("test_schema", "test_faketensor"),
    )


@needs_kernel
def test_torch_compile_traces_the_compiled_kernel():
    """One graph (fullgraph) for a training call and an inference call through the
    compiled kernel (a padded batch), with the values and gradients of the reference."""
    case = make_case(3, 5, 4, 6, "random", lengths=True)

    def train(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lens):
        return su_gru(x, h0, w_ih, w_hh, b_ih, b_hh, g, active, lens, impl="compiled")

    traced = torch.compile(train, backend="aot_eager", fullgraph=True)
    x, h0, w, g, active, lens = case
    got = run("reference", (x, h0, w, g, active, lens))

    def run_traced():
        out, h = traced(x, h0, *w, g, active, lens)
        gen = torch.Generator().manual_seed(1)
        weights = torch.randn(out.shape, generator=gen, dtype=torch.float32).to(out.dtype)
        loss = (out * weights).sum() + (h * h).sum()
        return (out, h, *torch.autograd.grad(loss, [x, h0, *w, g]))

    assert_close(run_traced(), got, 1e-10)
    with torch.no_grad():
        out, h = traced(x, h0, *w, g, active, lens)
    assert_close((out, h), got[:2], 1e-10)


@needs_kernel
@pytest.mark.parametrize("open_all", [False, True])
def test_torch_compile_traces_the_layer_at_inference(open_all):
    """The public layer in eval without gradients (a time-only rhythm gate, served from its
    step table in eager mode; every gate forced open as the efficiency baselines run it)
    compiles to one graph (fullgraph: the step tables' storage checks are skipped while
    tracing) with the eager layer's outputs and update rates."""
    from surnn.gates import all_open
    from surnn.layer import SelectiveUpdateGRU

    torch.manual_seed(0)
    layer = SelectiveUpdateGRU(
        4, 6, num_layers=2, batch_first=True, gate={"init_rate": 0.3}, impl="compiled"
    ).eval()
    x = torch.randn(2, 9, 4)
    traced = torch.compile(layer, backend="aot_eager", fullgraph=True)
    ctx = all_open if open_all else contextlib.nullcontext
    with torch.no_grad(), ctx():
        want, want_h = layer(x)
        want_rates = [float(r) for r in layer.last_update_rate]
        got, got_h = traced(x)
        got_rates = [float(r) for r in layer.last_update_rate]
    assert_close((got, got_h), (want, want_h), 1e-6)
    assert got_rates == pytest.approx(want_rates)
    assert (min(want_rates) == 1.0) == open_all
