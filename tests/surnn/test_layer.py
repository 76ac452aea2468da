"""surnn/layer.py: SelectiveUpdateGRU as a module (the op itself: test_ops.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from surnn.errors import ConfigError
from surnn.layer import SelectiveUpdateGRU
from surnn.ops import compiled
from tests.fixtures import triton_interpreter_unless_cuda


def test_layer_rejects_bidirectional_and_bad_impl():
    with pytest.raises(ConfigError):
        SelectiveUpdateGRU(4, 4, bidirectional=True)
    with pytest.raises(ConfigError, match="impl"):
        SelectiveUpdateGRU(4, 4, impl="cuda-magic")


def test_rates_are_detached_tensors_and_the_penalty_keeps_its_gradient():
    """Rates stay on the device (no host sync per layer per step); the trainer reads them
    when it logs. The penalty term is differentiable in the gate."""
    torch.manual_seed(0)
    gate = {"kind": "rhythm", "init_rate": 0.3, "target_rate": 0.1, "rate_penalty": 1.0}
    gate["rate_control"] = "none"  # the penalty alone (with control the rate is the target)
    rnn = SelectiveUpdateGRU(4, 8, num_layers=2, batch_first=True, gate=gate, impl="cpu")
    x, lens = torch.randn(3, 20, 4), torch.tensor([20, 7, 13])
    rnn(x, lengths=lens)
    for rates in (rnn.last_update_rate, rnn.last_active_rate):
        assert len(rates) == 2
        assert all(torch.is_tensor(r) and r.dim() == 0 and not r.requires_grad for r in rates)
    valid = (torch.arange(20)[:, None] < lens[None]).float()  # [T, B]
    g = rnn.last_gate[0]
    expected = (g.sum(1) * valid.sum(1)).sum() / (lens.sum() * 8)
    assert torch.allclose(rnn.last_update_rate[0], expected)
    assert rnn.last_aux_loss.requires_grad
    rnn.last_aux_loss.backward()
    assert rnn.gates[1].bias.grad.abs().sum() > 0


# The drop-in grid: every configuration nn.GRU accepts that the layer supports.
GRID = list(itertools.product((1, 2), (True, False), (False, True)))  # layers, bias, hx
INPUTS = ("padded", "packed sorted", "packed unsorted")


def _gru_run(module, x, hx, inp, batch_first):
    """(output as a padded tensor, h_n, the packed output or None, gradients by name) of
    ``module`` on ``x`` ([T, B, D] or [B, T, D] as ``batch_first`` says), given padded or
    packed (sorted lengths with enforce_sorted=True, or unsorted, ties included)."""
    x = x.clone().requires_grad_()
    hx = None if hx is None else hx.clone().requires_grad_()
    lens = torch.tensor([6, 5, 2, 2]) if inp == "packed sorted" else torch.tensor([6, 2, 5, 2])
    if inp == "padded":
        out, h_n = module(x, hx)
        packed, padded = None, out
    else:
        seq = pack_padded_sequence(x, lens, batch_first, enforce_sorted=inp == "packed sorted")
        packed, h_n = module(seq, hx)
        padded = pad_packed_sequence(packed, batch_first)[0]
    gen = torch.Generator().manual_seed(1)
    w_out = torch.randn(padded.shape, generator=gen, dtype=padded.dtype)
    w_h = torch.randn(h_n.shape, generator=gen, dtype=h_n.dtype)
    loss = (padded * w_out).sum() + (h_n * w_h).sum()
    names = [n for n, _ in module.named_parameters() if n.startswith(("weight_", "bias_"))]
    wrt = [x, *([hx] if hx is not None else []), *(module.get_parameter(n) for n in names)]
    grads = torch.autograd.grad(loss, wrt)
    return padded, h_n, packed, dict(zip(["x", "hx"][: 2 - (hx is None)] + names, grads))


def _check_drop_in(impls, inp, batch_first, dtype, tol, grid=GRID):
    """The layer with every gate open against torch.nn.GRU with the same weights (loaded
    from its state dict): outputs, packed layout, h_n and every gradient. On one thread:
    at these sizes a second costs ten times the CPU time in synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare_with_nn_gru(impls, inp, batch_first, dtype, tol, grid)
    finally:
        torch.set_num_threads(threads)


def _compare_with_nn_gru(impls, inp, batch_first, dtype, tol, grid):
    for layers, bias, with_hx in grid:
        torch.manual_seed(layers + 2 * bias)
        gru = torch.nn.GRU(3, 5, layers, bias=bias, batch_first=batch_first).to(dtype)
        x = torch.randn((4, 6, 3) if batch_first else (6, 4, 3), dtype=dtype)
        hx = torch.randn(layers, 4, 5, dtype=dtype) if with_hx else None
        ref = _gru_run(gru, x, hx, inp, batch_first)
        for impl in impls:
            where = f"impl={impl} {inp} batch_first={batch_first} layers={layers} bias={bias}"
            where += f" hx={with_hx}"
            su = SelectiveUpdateGRU(
                3, 5, layers, bias=bias, batch_first=batch_first, gate={"kind": "open"}, impl=impl
            ).to(dtype)
            missing, unexpected = su.load_state_dict(gru.state_dict(), strict=False)
            assert not missing and not unexpected, where
            got = _gru_run(su, x, hx, inp, batch_first)
            if ref[2] is not None:
                assert isinstance(got[2], PackedSequence), where
                for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
                    a, b = getattr(ref[2], field), getattr(got[2], field)
                    same = a is b if a is None or b is None else torch.equal(a, b)
                    assert same, f"{where}: {field} {a} != {b}"
                assert (ref[2].data - got[2].data).abs().max() < tol, f"{where}: packed data"
            for name, a, b in [("output", ref[0], got[0]), ("h_n", ref[1], got[1])]:
                assert a.shape == b.shape and (a - b).abs().max() < tol, f"{where}: {name}"
            assert ref[3].keys() == got[3].keys(), where
            for name, a in ref[3].items():
                assert (a - got[3][name]).abs().max() < tol, f"{where}: d{name}"


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("inp", INPUTS)
def test_the_open_layer_is_nn_gru(inp, batch_first):
    """A drop-in: for every implementation (reference, cpu, compiled), over layers 1 and
    2, with and without biases and hx, for padded input and for input packed sorted or
    unsorted (outputs in the caller's batch order, packed as nn.GRU packs them), in
    float64."""
    impls = ["reference", "cpu"] + (["compiled"] if compiled.available() else [])
    _check_drop_in(impls, inp, batch_first, torch.float64, 1e-10)


def test_the_open_layer_is_nn_gru_on_triton():
    """The Triton path (fp32; under the Triton interpreter without CUDA, ~3 s a
    configuration, so three that cover every input kind, both layouts, 1 and 2 layers,
    with and without biases and hx)."""
    triton_interpreter_unless_cuda()
    device_cases = [
        ("packed unsorted", True, [(2, True, True)]),
        ("packed sorted", False, [(2, False, False)]),
        ("padded", False, [(1, True, True)]),
    ]
    for inp, batch_first, grid in device_cases:
        _check_drop_in(["triton"], inp, batch_first, torch.float32, 1e-4, grid)


def _train_toy(gate, steps=12, T=20, H=8, seed=0):
    """A short training on a toy task (sign of the first inputs), two layers; returns the
    layer and its per-layer update rates on fresh eval data."""
    torch.manual_seed(seed)
    rnn = SelectiveUpdateGRU(4, H, num_layers=2, batch_first=True, gate=gate, impl="reference")
    head = torch.nn.Linear(H, 2)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(steps):
        x, lens = torch.randn(8, T, 4), torch.randint(T // 2, T + 1, (8,))
        y = (x[:, 0, 0] > 0).long()
        loss = torch.nn.functional.cross_entropy(head(rnn(x, lengths=lens)[1][-1]), y)
        if rnn.last_aux_loss is not None:
            loss = loss + rnn.last_aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    rnn.eval()
    with torch.no_grad():
        rnn(torch.randn(64, T, 4), lengths=torch.randint(T // 2, T + 1, (64,)))
    return rnn, [float(r) for r in rnn.last_update_rate]


@pytest.mark.parametrize(
    "gate",
    [
        {"kind": "rhythm", "init_rate": 0.5, "target_rate": 0.17},
        {"kind": "rhythm", "init_rate": 0.17, "target_rate": 0.5, "surrogate": "ste"},
        {"kind": "soft", "init_rate": 0.5, "target_rate": 0.17},
    ],
)
def test_a_target_rate_is_reached_in_every_layer(gate):
    """The criterion: a run with a target update rate ends within 0.02 of it in
    every layer (eval mode, fresh data, lengths that differ from the training batches')."""
    rnn, rates = _train_toy(gate)
    assert all(abs(r - gate["target_rate"]) < 0.02 for r in rates), rates
    assert all(float(g.rate_offset) != 0 for g in rnn.gates)  # the offset moved, and is kept
    assert sum(k.endswith("rate_offset") for k in rnn.state_dict()) == 2


def test_each_training_batch_is_steered_exactly_to_the_target():
    torch.manual_seed(0)
    gate = {"kind": "rhythm", "init_rate": 0.6, "target_rate": 0.17}
    rnn = SelectiveUpdateGRU(3, 16, num_layers=2, batch_first=True, gate=gate, impl="reference")
    lens = torch.tensor([40, 13, 27])
    rnn(torch.randn(3, 40, 3), lengths=lens)
    n = int(lens.sum()) * 16
    for r in rnn.last_update_rate:  # at or above the target by at most one tie
        assert 0.17 <= float(r) <= 0.17 + 2 / n + 1e-6
    offset = [float(g.rate_offset) for g in rnn.gates]
    with torch.no_grad():  # no autograd (eval, or inference in train mode): no steering
        rnn(torch.randn(3, 40, 3), lengths=lens)
    assert [float(g.rate_offset) for g in rnn.gates] == offset


def test_rate_control_options_are_checked():
    with pytest.raises(ConfigError, match="rate_control='pid'"):
        SelectiveUpdateGRU(4, 4, gate={"target_rate": 0.2, "rate_control": "pid"})
    with pytest.raises(ConfigError, match="no pre-activation"):
        SelectiveUpdateGRU(4, 4, gate={"kind": "interval", "target_rate": 0.2})
    free = SelectiveUpdateGRU(4, 4, gate={"target_rate": 0.2, "rate_control": "none"})
    assert not any(k.endswith("rate_offset") for k in free.state_dict())


@pytest.mark.parametrize("packed", [False, True])
def test_lengths_that_close_nothing_match_no_lengths(packed):
    """Lengths all reaching T (a batch of one, no padding) are dropped for the computation
    (the unpadded paths are cheaper): same outputs, state and rates as without lengths; a
    packed input still comes back packed."""
    torch.manual_seed(1)
    gate = {"kind": "rhythm", "init_rate": 0.3}
    rnn = SelectiveUpdateGRU(4, 8, num_layers=2, batch_first=True, gate=gate).eval()
    x, lens = torch.randn(3, 20, 4), torch.tensor([20, 20, 20])
    with torch.no_grad():
        ref, h_ref = rnn(x)
        rates = [r.clone() for r in rnn.last_update_rate]
        if packed:
            inp = torch.nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True)
            out, h = rnn(inp)
            assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
            out = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0]
        else:
            out, h = rnn(x, lengths=lens)
    assert torch.equal(out, ref) and torch.equal(h, h_ref)
    assert all(torch.equal(a, b) for a, b in zip(rnn.last_update_rate, rates))


def test_closes_nothing_reads_only_cpu_lengths():
    """The unpadded shortcut's check: lengths all reaching T; never read off the CPU (a
    device tensor would cost a host sync per layer call; a meta tensor cannot be read)."""
    from surnn.utils import closes_nothing

    assert closes_nothing(torch.tensor([5, 6]), 5)
    assert not closes_nothing(torch.tensor([5, 4]), 5)
    assert not closes_nothing(None, 5)
    assert not closes_nothing(torch.tensor([5, 6], device="meta"), 5)
    assert closes_nothing(torch.tensor([], dtype=torch.long), 5)  # an empty batch


def test_eval_rates_from_the_gate_table_follow_the_weights():
    """In eval the layer takes a time-only gate's rates from the gate's table (computed
    once per T): equal to the means it would compute, and fresh after a weight change."""
    torch.manual_seed(0)
    layer = SelectiveUpdateGRU(6, 16, 2, batch_first=True, gate={"kind": "rhythm"}).eval()
    x = torch.randn(1, 30, 6)

    def check():
        with torch.no_grad():
            layer(x)
            for k, gate in enumerate(layer.gates):
                g, a = gate.gate(30, None, None, torch.float32, 0)
                assert torch.equal(layer.last_update_rate[k], g.float().mean())
                assert torch.equal(layer.last_active_rate[k], a.float().mean())
        return [float(r) for r in layer.last_update_rate]

    first = check()
    assert check() == first  # served from the table
    with torch.no_grad():
        layer.gates[1].bias.add_(2.0)  # an optimizer step: more neurons open
    second = check()
    assert second[0] == first[0] and second[1] > first[1]
    with torch.no_grad():
        layer(x, lengths=torch.tensor([30]))  # full lengths: the same path
    assert [float(r) for r in layer.last_update_rate] == second


needs_kernel = pytest.mark.skipif(not compiled.available(), reason="no compiled CPU kernel")


def _spy_fast_path(monkeypatch) -> list:
    """Records each call of the layer's inference path to the kernel: ``compiled.infer_plan``
    with a served gate's step plan (1), ``compiled.infer`` without one (2)."""
    calls = []
    for name, tag in (("infer_plan", 1), ("infer", 2)):
        real = getattr(compiled, name)
        spy = lambda *a, real=real, tag=tag: calls.append(tag) or real(*a)  # noqa: E731
        monkeypatch.setattr(compiled, name, spy)
    return calls


@needs_kernel
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("layers,bias,hx", [(1, True, False), (2, False, True), (2, True, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_inference_path_equals_the_general_path(
    batch_first, layers, bias, hx, dtype, monkeypatch
):
    """Inference of an unpadded batch goes straight to the kernel, one call per layer: the
    same outputs, final states and ``last`` as the general path, bit for bit."""
    torch.manual_seed(0)
    gate = {"kind": "rhythm", "init_rate": 0.3}
    layer = SelectiveUpdateGRU(5, 12, layers, bias=bias, batch_first=batch_first, gate=gate)
    layer = layer.to(dtype).eval()
    x = torch.randn(3, 17, 5, dtype=dtype)
    x = x if batch_first else x.transpose(0, 1)
    h0 = torch.randn(layers, 3, 12, dtype=dtype) if hx else None
    calls = _spy_fast_path(monkeypatch)
    with torch.no_grad():
        fast, last = layer(x, h0), layer.last
        gate = layer.gates[0]  # a gate served without a table: the kernel gets g itself
        monkeypatch.setattr(gate, "_from_table", lambda T, d, dt: gate.gate(T, None, d, dt, 0))
        unserved = layer(x, h0)
    assert calls == [1] * layers + [2] + [1] * (layers - 1)
    monkeypatch.setattr(SelectiveUpdateGRU, "_infer", lambda *a: None)
    with torch.no_grad():
        ref = layer(x, h0)
    assert len(calls) == 2 * layers  # the general path does not take it
    assert torch.equal(unserved[0], ref[0]) and torch.equal(unserved[1], ref[1])
    assert torch.equal(fast[0], ref[0]) and torch.equal(fast[1], ref[1])
    assert last.aux_loss is None and layer.last.aux_loss is None
    for got, want in zip(last[:3], layer.last[:3]):
        assert len(got) == len(want) == layers
        assert all(torch.equal(a, b) and not a.requires_grad for a, b in zip(got, want))


@needs_kernel
def test_the_inference_path_keeps_last_while_the_gates_serve_the_same_views():
    """The previous ``LastCall`` is kept while every gate serves the same table views; a
    weight change or another length gives new views and fresh rates."""
    torch.manual_seed(0)
    layer = SelectiveUpdateGRU(4, 16, 2, batch_first=True, gate={"kind": "rhythm"}).eval()
    x = torch.randn(1, 30, 4)
    with torch.no_grad():
        layer(x)
        first = layer.last
        layer(x)
        assert layer.last is first
        layer.gates[1].bias.add_(2.0)  # an optimizer step: more neurons open
        layer(x)
        assert layer.last is not first
        assert float(layer.last.update_rate[1]) > float(first.update_rate[1])
        layer(x[:, :20])
        for k, gate in enumerate(layer.gates):
            g, a = gate.gate(20, None, None, torch.float32, 0)
            assert torch.equal(layer.last.gate[k], g)
            assert torch.equal(layer.last.update_rate[k], g.float().mean())
            assert torch.equal(layer.last.active_rate[k], a.float().mean())


@needs_kernel
def test_the_general_path_runs_where_the_inference_path_does_not_apply(monkeypatch):
    """Gradients, padding that closes steps, packed input, a gate clock (t0), another
    kernel, a per-sample gate, a dispatch mode (FLOP counting), and dropout or a rate
    penalty in training all take the general path; lengths that close nothing do not."""
    torch.manual_seed(0)
    x, lens = torch.randn(2, 9, 4), torch.tensor([9, 5])

    def layer(**kw):
        gate = kw.pop("gate", {"kind": "rhythm"})
        return SelectiveUpdateGRU(4, 8, batch_first=True, gate=gate, **kw).eval()

    general = {
        "grad": lambda: layer()(x),
        "lengths": lambda: layer()(x, lengths=lens),
        "packed": lambda: layer()(pack_padded_sequence(x, lens, batch_first=True)),
        "t0": lambda: layer()(x, t0=3),
        "cpu": lambda: layer(impl="cpu")(x),
        "content": lambda: layer(gate={"kind": "content"})(x),
        "flops": lambda: _counted(layer(), x),
        "dropout": lambda: layer(num_layers=2, dropout=0.5).train()(x),
        "parametrized": lambda: _parametrized(layer())(x),
        "penalty": lambda: layer(
            gate={"kind": "rhythm", "target_rate": 0.2, "rate_penalty": 1.0}
        ).train()(x),
    }
    calls = _spy_fast_path(monkeypatch)
    for name, run in general.items():
        if name == "grad":
            run()
        else:
            with torch.no_grad():
                run()
        assert calls == [], name
    with torch.no_grad():
        layer()(x, lengths=torch.tensor([9, 9]))
        layer(num_layers=2, dropout=0.5)(x)  # eval: no dropout
    assert calls == [1, 1, 1]


def _parametrized(layer):
    """``layer`` with W_hh computed by a parametrization (twice the stored tensor): a weight
    the layer reads as an attribute, not from its parameters."""
    from torch.nn.utils import parametrize

    class Twice(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    parametrize.register_parametrization(layer, "weight_hh_l0", Twice())
    return layer


@needs_kernel
def test_a_parametrized_weight_is_used_as_the_general_path_uses_it(monkeypatch):
    torch.manual_seed(0)
    layer = _parametrized(SelectiveUpdateGRU(4, 8, batch_first=True).eval())
    x = torch.randn(1, 12, 4)
    with torch.no_grad():
        got = layer(x)
        monkeypatch.setattr(SelectiveUpdateGRU, "_infer", lambda *a: None)
        want = layer(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    original = layer.parametrizations.weight_hh_l0.original
    with torch.no_grad():
        plain = SelectiveUpdateGRU(4, 8, batch_first=True).eval()
        state = {k: v for k, v in layer.state_dict().items() if "parametrizations" not in k}
        plain.load_state_dict({**state, "weight_hh_l0": 2 * original}, strict=False)
        assert torch.equal(plain(x)[0], got[0])  # the parametrized weight, not the stored one


def _counted(module, x):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        module(x)
    assert fc.get_total_flops() > 0
