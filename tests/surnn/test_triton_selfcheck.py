"""The first use of the Triton path on a device checks itself (surnn/ops/triton/selfcheck.py).
Here the check is pointed at the CPU (the Triton interpreter, a small case) and at the graph
path's CPU stand-in: it runs once per device and dtype, and after a mismatch or an error
the op runs the eager PyTorch path, after one warning that says how to report it."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.fixtures import (
    assert_close,
    corrupting_recorder,
    make_case,
    run,
    triton_interpreter_unless_cuda,
)

triton_interpreter_unless_cuda()  # before the kernels are imported

from surnn.ops.triton import graphs, loops, op, selfcheck  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU stand-in")


@pytest.fixture(autouse=True)
def checked_cpu(monkeypatch):
    monkeypatch.setattr(selfcheck, "DEVICES", ("cpu",))
    monkeypatch.setattr(selfcheck, "CASE", dict(B=2, T=2, D=3, H=16))
    monkeypatch.setattr(loops, "FILL", float("nan"))
    monkeypatch.setattr(
        graphs, "CACHE", graphs.GraphCache(capture=graphs.Recorder, devices=("cpu",))
    )
    selfcheck.reset()
    yield
    selfcheck.reset()


def case():
    return make_case(3, 5, 4, 16, "random", lengths=True, dtype=torch.float32)


def test_first_use_checks_once_per_dtype_and_passes(monkeypatch):
    calls = []
    real = selfcheck._check
    monkeypatch.setattr(selfcheck, "_check", lambda d, t, f: calls.append((d, t)) or real(d, t, f))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on a pass
        got = run("triton", case())
        run("triton", case())
    assert calls == [(torch.device("cpu"), torch.float32)]
    assert {("cpu", torch.float32): None} == selfcheck._STATE
    # the check ran the graph path (2 keys per gate kind), the second call captured its own
    assert graphs.CACHE.stats["captured"] == 6
    assert_close(got, run("reference", case()), 2e-4)


def test_a_mismatch_falls_back_to_the_eager_path_with_one_warning(monkeypatch):
    real = loops.Fwd.store

    def wrong(self, s, t0, n):
        real(self, s, t0, n)
        self.out[:, t0 : t0 + n] += 0.01  # a kernel that computes something else

    monkeypatch.setattr(loops.Fwd, "store", wrong)
    eager_calls = []
    from surnn.ops import cpu

    real_cpu = cpu.su_gru_cpu
    monkeypatch.setattr(cpu, "su_gru_cpu", lambda *a: eager_calls.append(1) or real_cpu(*a))
    with pytest.warns(RuntimeWarning, match=r"failed their first-use check.*out differs.*report"):
        got = run("triton", case())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per process and dtype
        again = run("triton", case())
    assert len(eager_calls) == 2
    ref = run("reference", case())
    assert_close(got, ref, 1e-5)
    assert_close(again, ref, 1e-5)


def test_an_error_falls_back_too(monkeypatch):
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(op, "_kernels", lambda: Broken())
    with pytest.warns(RuntimeWarning, match="RuntimeError: no kernel image"):
        got = run("triton", case())
    assert_close(got, run("reference", case()), 1e-5)
    assert "no kernel image" in selfcheck._STATE[("cpu", torch.float32)]


def test_a_graph_replay_that_differs_is_caught_by_its_capture_check(monkeypatch):
    """The graph part: a replay that differs from its eager warm-up is never used (its key runs
    eagerly, with a warning to report it); the kernels themselves pass the check."""

    cache = graphs.GraphCache(capture=corrupting_recorder(), devices=("cpu",))
    monkeypatch.setattr(graphs, "CACHE", cache)
    with pytest.warns(RuntimeWarning, match="bit for bit.*report"):
        got = run("triton", case())
    assert {("cpu", torch.float32): None} == selfcheck._STATE
    assert graphs.CACHE.eager_keys() and len(graphs.CACHE) == 0
    assert_close(got, run("reference", case()), 2e-4)


def test_the_warning_names_the_device_as_results_record_it(monkeypatch):
    """A GPU is named by surnn.provenance.device_name (as results.json and the benchmark
    JSONs name it), after the device; other devices by the device alone."""
    monkeypatch.setattr(selfcheck, "device_name", lambda d: f"GPU of {d}")
    assert selfcheck._name(torch.device("cuda:1")) == "cuda:1 (GPU of cuda:1)"
    assert selfcheck._name(torch.device("cpu")) == "cpu"
