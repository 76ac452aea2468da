"""surnn/gates.py: the gate kinds, their options, surrogate gradients and all_open."""

from __future__ import annotations

import gc
import json
import math
import weakref

import pytest
import torch

from surnn.errors import ConfigError
from surnn.gates import all_open, build_gate
from surnn.ops import step_tables


def test_interval_gate_rate_and_slabs():
    gate = build_gate(12, 4, {"kind": "interval", "period": 3})
    g, active = gate(30)
    assert g.shape == (30, 12) and torch.equal(active, g.bool())
    assert torch.allclose(g.mean(0), torch.full((12,), 1 / 3))
    for t in range(30):  # one contiguous slab of 4 neurons per step
        idx = g[t].nonzero().flatten()
        assert len(idx) == 4 and int(idx[-1] - idx[0]) == 3


def test_rhythm_init_rate_and_bounded_active_set():
    torch.manual_seed(0)
    gate = build_gate(256, 4, {"kind": "rhythm", "init_rate": 0.2, "width": 0.5})
    g, active = gate(2000)
    assert abs(g.mean().item() - 0.2) < 0.05
    a = gate.preactivation(2000)
    assert torch.equal(active, (a > 0) | (a.abs() < 0.5))  # training: open + near threshold
    with torch.no_grad():
        _, active_eval = gate(2000)
    assert torch.equal(active_eval, a > 0)
    ste = build_gate(8, 4, {"kind": "rhythm", "surrogate": "ste"})
    assert ste(10)[1].all()


@pytest.mark.parametrize("kind", ["rhythm", "random", "soft"])
def test_grouped_rhythm_shares_one_rhythm_per_group(kind):
    torch.manual_seed(0)
    gate = build_gate(12, 4, {"kind": kind, "group_size": 4, "init_rate": 0.3})
    g, _ = gate(50)
    assert g.shape == (50, 12)
    assert torch.equal(g, g[:, ::4].repeat_interleave(4, dim=1))  # 3 rhythms of 4 neurons
    assert not torch.equal(g[:, 0], g[:, 4])  # the groups differ
    if kind == "rhythm":
        assert gate.phi.shape == (3, 4) and gate.bias.shape == (3,)
    with pytest.raises(ConfigError, match=r"group_size=5.*dividing the hidden size 12"):
        build_gate(12, 4, {"kind": kind, "group_size": 5})


def test_grouped_rhythm_gradient_sums_over_the_group():
    torch.manual_seed(0)
    gate = build_gate(8, 4, {"kind": "rhythm", "group_size": 4, "surrogate": "rect"})
    g, _ = gate(100)
    g.sum().backward()
    a = gate.preactivation(100).detach()
    expected = (a.abs() < gate.width).float().sum(0).view(2, 4).sum(1)
    assert torch.allclose(gate.bias.grad, expected)


def test_grouped_rhythm_runs_on_slabs_and_matches_the_reference():
    """With shared rhythms the plan has one group per rhythm (row slices, no gather), and
    the cpu path still equals the reference."""
    from surnn.ops import su_gru
    from surnn.ops.schedule import make_plan

    torch.manual_seed(0)
    H, T = 32, 40
    gate = build_gate(H, 4, {"kind": "rhythm", "group_size": 8, "init_rate": 0.3})
    with torch.no_grad():
        g, active = gate(T)
    plan = make_plan(active)
    assert plan.groups is not None and len(plan.groups) <= H // 8
    assert all(isinstance(w, slice) for step in plan.steps for w, _, _ in step)
    x, h0 = torch.randn(3, T, 5, dtype=torch.float64), torch.randn(3, H, dtype=torch.float64)
    w = [
        torch.randn(s, dtype=torch.float64) * 0.3
        for s in [(3 * H, 5), (3 * H, H), (3 * H,), (3 * H,)]
    ]
    g64 = g.double()
    with torch.no_grad():
        a = su_gru(x, h0, *w, g64, active, impl="cpu")
        b = su_gru(x, h0, *w, g64, active, impl="reference")
    assert (a[0] - b[0]).abs().max() < 1e-10 and (a[1] - b[1]).abs().max() < 1e-10


def test_surrogate_gradient_is_bounded():
    gate = build_gate(16, 4, {"kind": "rhythm", "surrogate": "rect", "width": 0.3})
    g, _ = gate(100)
    g.sum().backward()
    a = gate.preactivation(100).detach()
    expected = (a.abs() < 0.3).float().sum(0)
    assert torch.allclose(gate.bias.grad, expected)


def test_random_and_content_gates():
    rnd = build_gate(8, 4, {"kind": "random"})
    assert not list(rnd.parameters())
    content = build_gate(8, 4, {"kind": "content"})
    g, active = content(5, torch.randn(3, 5, 4))
    assert g.shape == (3, 5, 8) and active.shape == (3, 5, 8)
    soft = build_gate(8, 4, {"kind": "soft"})
    g, active = soft(5)
    assert ((g > 0) & (g < 1)).all() and active.all()


def test_all_open_forces_every_gate():
    for kind in ["rhythm", "interval", "content"]:
        gate = build_gate(8, 4, {"kind": kind})
        with all_open():
            g, active = gate(6, torch.randn(2, 6, 4))
        assert g.all() and active.all()


def test_bad_gate_config_names_the_option():
    with pytest.raises(ConfigError, match="kind"):
        build_gate(8, 4, {"kind": "nope"})
    with pytest.raises(ConfigError, match="colour"):
        build_gate(8, 4, {"colour": 1})
    with pytest.raises(ConfigError, match="init_rate"):
        build_gate(8, 4, {"init_rate": 2.0})


def test_gate_table_options_come_from_the_constructors():
    import inspect

    from surnn.gates import GATES, IntervalGate, RhythmGate, gate_options

    assert set(GATES) == {"rhythm", "soft", "random", "interval", "open", "content", "input"}
    assert gate_options("input") == {"threshold": 0.0}
    rhythm = inspect.signature(RhythmGate.__init__).parameters
    assert gate_options("rhythm") == {
        k: p.default for k, p in rhythm.items() if k not in ("self", "hidden_size")
    }
    assert gate_options("interval") == {"period": 3, "stagger": True}
    assert gate_options("open") == {}
    assert "frozen" not in gate_options("random")  # the kind fixes it
    assert {"surrogate", "width", "frozen"}.isdisjoint(gate_options("soft"))
    assert "temperature" in gate_options("soft")
    assert gate_options("content") == {
        "init_rate": 0.5,
        "surrogate": "triangle",
        "width": 1.0,
        "lr": None,
    }
    assert isinstance(build_gate(8, 4, {"kind": "interval", "period": 5}), IntervalGate)


@pytest.mark.parametrize(
    "kind,option",
    [("rhythm", "period"), ("interval", "n_freqs"), ("open", "init_rate"), ("soft", "width")],
)
def test_an_option_of_another_kind_is_an_error_naming_the_kinds_options(kind, option):
    """Never dropped silently (a dropped option would still give the run its own table row)."""
    with pytest.raises(
        ConfigError, match=rf"kind='{kind}' takes no option {option}; its options are"
    ):
        build_gate(8, 4, {"kind": kind, option: 5})


def test_unset_options_take_the_kinds_defaults():
    g = build_gate(8, 4, {"kind": "interval", "period": None, "n_freqs": None, "stagger": None})
    assert g.period == 3
    r = build_gate(8, 4, {"kind": "random", "n_freqs": 2})
    assert r.n_freqs == 2 and not any(p.requires_grad for p in r.parameters())


def test_input_threshold_gate_is_the_papers_x_gt_0():
    """The paper's input-threshold ablation: neuron i open at (b, t) iff x[b, t, i] > 0;
    nothing learned, no gradient through the gate; the learned ``content`` gate stays."""
    x = torch.randn(3, 7, 5, requires_grad=True)
    gate = build_gate(5, 5, {"kind": "input"})
    g, active = gate(7, x)
    assert g.shape == (3, 7, 5) and torch.equal(g.bool(), x > 0) and torch.equal(active, x > 0)
    assert not g.requires_grad and not list(gate.parameters())
    with pytest.raises(ConfigError, match="input size = hidden size"):
        build_gate(6, 5, {"kind": "input"})
    assert "content" in __import__("surnn.gates").gates.GATES


def test_the_input_gate_runs_in_the_layer_and_skips_where_x_le_0():
    from surnn.layer import SelectiveUpdateGRU

    torch.manual_seed(0)
    rnn = SelectiveUpdateGRU(4, 4, batch_first=True, gate={"kind": "input"}, impl="reference")
    x = torch.randn(2, 6, 4)
    y, _ = rnn(x)
    assert abs(float(rnn.last_update_rate[0]) - float((x > 0).float().mean())) < 1e-6
    closed = ~(x[:, 1:] > 0)  # a closed neuron keeps its state exactly
    assert torch.equal(y[:, 1:][closed], y[:, :-1][closed])


@pytest.mark.parametrize(
    "kind,opts",
    [
        ("rhythm", {}),
        ("rhythm", {"group_size": 4}),
        ("soft", {}),
        ("random", {}),
        ("interval", {"period": 3}),
        ("open", {}),
    ],
)
def test_inference_takes_the_gate_from_a_table_equal_to_computing_it(kind, opts):
    """Without gradients a time-only gate is served from a table of its first steps: bit
    for bit what computing it gives, at every T, and recomputed when a parameter or buffer
    changes (optimizer step, checkpoint load, rate control)."""
    torch.manual_seed(0)
    gate = build_gate(16, 16, {"kind": kind, **opts})

    def same(T):
        with torch.no_grad():
            g, a = gate(T, None, dtype=torch.float32)
            want_g, want_a = gate.gate(T, None, None, torch.float32, 0)
        return g.shape[0] == T and torch.equal(g, want_g) and torch.equal(a, want_a)

    assert all(same(T) for T in (50, 80, 30, 1, 200, 129))
    table = step_tables.table(gate, "gate")
    assert table.rows == 256  # the longest T asked, rounded up to a power of two
    assert same(17) and step_tables.table(gate, "gate") is table  # served, not recomputed
    if list(gate.parameters()):
        with torch.no_grad():
            next(gate.parameters()).add_(0.25)  # what an optimizer step does
        assert same(40) and step_tables.table(gate, "gate") is not table
        state = {k: v + 0.5 for k, v in gate.state_dict().items()}
        gate.load_state_dict(state)
        assert same(40)
        gate.load_state_dict({k: v - 0.75 for k, v in state.items()}, assign=True)
        assert same(40)  # new tensors under the same names
    if kind == "rhythm":
        gate.enable_rate_control()  # a buffer registered after the table was built
        with torch.no_grad():
            gate.rate_offset.add_(0.7)
        assert same(40)
        gate.rate_offset = torch.tensor(-0.4)
        assert same(40)


def test_a_gate_table_stays_out_of_the_state_dict_and_leaves_with_its_gate():
    gate = build_gate(8, 8, {"kind": "rhythm"})
    keys = set(gate.state_dict())
    with torch.no_grad():
        g, _ = gate(20, None, dtype=torch.float32)
    assert step_tables.table(gate, "gate") is not None and set(gate.state_dict()) == keys
    owner, view = weakref.ref(gate), weakref.ref(g)
    del gate, g
    gc.collect()
    assert owner() is None and view() is None  # the table holds no reference to its gate


def test_a_table_key_follows_every_tensor_of_its_owner():
    """A leaf's tensors are listed once and again after a registration on it; a module
    with children has its tree's listed at every key."""
    leaf, tree = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2))

    def key(m):
        return step_tables.state_key(m, None, torch.float32)

    for m in (leaf, tree):
        first = key(m)
        assert key(m) == first
        with torch.no_grad():
            next(m.parameters()).add_(1.0)  # in place: a new version
        assert key(m) != first
    for owner, m in ((leaf, leaf), (tree, tree[0])):
        before = key(owner)
        m.bias = torch.nn.Parameter(torch.zeros(2))  # a new tensor under an old name
        assert key(owner) != before
    before = key(leaf)
    leaf.register_buffer("extra", torch.zeros(1))
    assert len(key(leaf)[2]) == len(before[2]) + 1
    tree.append(torch.nn.Linear(2, 2))  # a new child
    assert len(key(tree)[2]) == 4
    before = key(leaf)
    leaf.double()  # a move: new storage
    assert key(leaf) != before


def test_served_rates_only_for_what_a_table_served():
    from surnn.ops.step_tables import served_rates

    torch.manual_seed(0)
    gate = build_gate(16, 16, {"kind": "rhythm"})
    with torch.no_grad():
        g, a = gate(40, None, dtype=torch.float32)
        again, _ = gate(40, None, dtype=torch.float32)
        assert again is g  # the same view for the same T
        rate, act = served_rates(g)
        assert torch.equal(rate, g.float().mean()) and torch.equal(act, a.float().mean())
        assert served_rates(g.clone()) is None  # not a table view
        assert served_rates(gate(0, None, dtype=torch.float32)[0]) is None  # empty
    assert served_rates(gate(40, None, dtype=torch.float32)[0]) is None  # with gradients
    with torch.no_grad(), all_open():  # the dense baseline: an all-open table, same cost
        g1, a1 = gate(40, None, dtype=torch.float32)
        assert gate(40, None, dtype=torch.float32)[0] is g1
        assert torch.equal(g1, torch.ones(40, 16)) and bool(a1.all()) and a1.dtype == torch.bool
        assert [float(r) for r in served_rates(g1)] == [1.0, 1.0]
    with torch.no_grad():
        assert gate(40, None, dtype=torch.float32)[0] is g  # the learned table again


def test_served_extra_is_built_once_per_view():
    """``served_extra`` builds once per served view and name (a new table after a weight
    change gives new views, so a new build) and nothing for any other tensor."""
    from surnn.ops.step_tables import served_extra

    torch.manual_seed(0)
    gate = build_gate(16, 16, {"kind": "rhythm"})
    builds = []

    def build(g, active):
        builds.append((g, active))
        return len(builds)

    with torch.no_grad():
        g, a = gate(40, None, dtype=torch.float32)
        assert served_extra(g, "x", build) == served_extra(g, "x", build) == 1
        assert builds[0][0] is g and builds[0][1] is a  # the view and its active view
        assert served_extra(g, "y", build) == 2  # another name
        assert served_extra(g.clone(), "x", build) is None  # not a table view
        assert served_extra(gate(20, None, dtype=torch.float32)[0], "x", build) == 3
        gate.bias.add_(1.0)  # a new table, new views
        assert served_extra(gate(40, None, dtype=torch.float32)[0], "x", build) == 4
    assert len(builds) == 4


def test_the_gate_table_is_not_used_with_gradients_or_a_later_window():
    torch.manual_seed(0)
    gate = build_gate(8, 8, {"kind": "rhythm"})
    g, _ = gate(20, None, dtype=torch.float32)
    assert g.requires_grad and step_tables.table(gate, "gate") is None
    with torch.no_grad():
        late, _ = gate(20, None, dtype=torch.float32, t0=1000)
        want, _ = gate.gate(20, None, None, torch.float32, 1000)
    assert torch.equal(late, want) and step_tables.table(gate, "gate") is None


@pytest.mark.parametrize("init", ["timescale", "clockwork"])
def test_timescale_inits_give_each_neuron_one_period_and_one_window(init):
    torch.manual_seed(0)
    H, K, T = 64, 8, 4000
    gate = build_gate(
        H,
        4,
        {
            "kind": "rhythm",
            "init": init,
            "n_freqs": K,
            "period_min": 1.0,
            "seq_len": 1000,
            "rate_min": 0.01,
            "rate_max": 0.4,
        },
    )
    assert float(gate.log_omega.exp().min()) == pytest.approx(2 * math.pi / 4000.0)  # 4 x seq_len
    dominant = (gate.alpha != 0).sum(1)
    assert (dominant <= 1).all()  # one frequency per neuron (none: open at every step)
    k = gate.alpha.abs().argmax(1)[dominant == 1]
    assert torch.equal(k, k.sort().values)  # the neurons spread over the bank in order
    with torch.no_grad():
        g, _ = gate(T)
        a = gate.preactivation(T)
    periods = (2 * math.pi / gate.log_omega.exp())[gate.alpha.abs().argmax(1)]
    for i in range(H):
        steps = g[:, i].nonzero().flatten()
        if dominant[i] == 0:
            assert len(steps) == T  # always open
            continue
        P = float(periods[i])
        assert len(steps) >= 1  # opens in every period (T covers the slowest)
        first = steps[steps < P - 2]
        if init == "clockwork" and P >= 10:  # every window starts with the sequence
            assert int(first[0]) == 0 and int(first[-1]) == len(first) - 1
            t = int(first[-1])  # the window's end: a crosses 0 with slope ~edge_slope
            if P >= 300 and len(first) >= 10 and t + 1 < T:
                assert float(a[t, i] - a[t + 1, i]) == pytest.approx(0.01, rel=0.1)


def test_the_bank_scales_with_the_sequence_length():
    def slowest(opts):
        gate = build_gate(4, 4, {"kind": "rhythm", **opts})
        return float(2 * math.pi / gate.log_omega.exp().min())

    assert slowest({}) == pytest.approx(1024.0)  # no length known: the fixed default
    assert slowest({"seq_len": 300}) == pytest.approx(1200.0)  # period_scale 4
    assert slowest({"seq_len": 300, "period_scale": 2.0}) == pytest.approx(600.0)
    assert slowest({"seq_len": 300, "period_max": 50.0}) == pytest.approx(50.0)  # explicit wins
    with pytest.raises(ConfigError, match="seq_len=0"):
        build_gate(4, 4, {"kind": "rhythm", "seq_len": 0})
    with pytest.raises(ConfigError, match="init='chrono'.*uniform, timescale, clockwork"):
        build_gate(4, 4, {"kind": "rhythm", "init": "chrono"})
    with pytest.raises(ConfigError, match="rate_min=0.5: expected at most rate_max=0.1"):
        build_gate(4, 4, {"kind": "rhythm", "init": "clockwork", "rate_min": 0.5, "rate_max": 0.1})


def test_explicit_params_from_a_mapping_or_a_file_and_frozen(tmp_path):
    values = {"bias": [0.5, -1.0], "phi": [[0.0, 1.0], [2.0, 3.0]]}
    gate = build_gate(2, 3, {"kind": "rhythm", "n_freqs": 2, "params": values})
    assert gate.bias.tolist() == [0.5, -1.0] and gate.phi.requires_grad
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(values))
    frozen = build_gate(2, 3, {"kind": "rhythm", "n_freqs": 2, "params": str(path), "frozen": True})
    assert torch.equal(frozen.phi, gate.phi.detach())
    assert not list(frozen.parameters())  # frozen: buffers, nothing to train
    pt = tmp_path / "gate.pt"
    torch.save({k: v.detach() for k, v in gate.state_dict().items()}, pt)
    again = build_gate(2, 3, {"kind": "rhythm", "n_freqs": 2, "params": str(pt)})
    for name in ("bias", "alpha", "phi", "log_omega"):
        assert torch.equal(getattr(again, name), getattr(gate, name))
    # one-line errors naming the input
    with pytest.raises(ConfigError, match=r"bias has shape \[3\]; this gate needs \[2\]"):
        build_gate(2, 3, {"kind": "rhythm", "params": {"bias": [1, 2, 3]}})
    with pytest.raises(ConfigError, match="unknown tensor 'beta'"):
        build_gate(2, 3, {"kind": "rhythm", "params": {"beta": [1, 2]}})
    with pytest.raises(ConfigError, match="no such file"):
        build_gate(2, 3, {"kind": "rhythm", "params": str(tmp_path / "missing.json")})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: unreadable"):
        build_gate(2, 3, {"kind": "rhythm", "params": str(tmp_path / "bad.json")})


def test_hold_stats_count_neurons_open_at_the_input_and_closed_through_the_delay():
    from surnn.gates import hold_stats

    g = torch.zeros(20, 4)
    g[:3, 0] = 1  # holds
    g[:3, 1] = 1
    g[10, 1] = 1  # reopens in the delay
    g[15:, 2] = 1  # opens only after the delay
    g[:6, 3] = 1  # open one step into the delay, then holds
    assert hold_stats(g, (0, 5), (5, 15)) == {
        "holders": 1,
        "late_holders": 2,  # neuron 3 is closed through steps 6..14
        "open_at_input": 3,
        "closed_through_hold": 2,  # neurons 0 and 2
    }
