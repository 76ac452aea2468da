"""What ``--suite targets`` of scripts/bench_surnn.py times: each setting's pairs of a
case and its baseline (surnn/ops/bench.py runs and records them).

The op's cases gate it with the paper's rhythm at ``TARGET_RATE`` open (``rhythm_at``: the
gate's bias shifted so exactly that fraction of the updates is open). Every training row
names its surrogate: the op's rows compute the open neurons and the closed ones within the
triangle's half-width ``--width``; the ``surrogate`` setting times a training step of the
public layer with the presets' gate under each of ``SURROGATES`` (straight-through, the
presets' until the surrogate study, computes every update; the triangle of width 1 is the
layer's default) at the shapes of ``SURROGATE_SHAPES``. The settings, in the order they run,
are ``SETTINGS``.
"""

from __future__ import annotations

import torch

from surnn.gates import all_open, build_gate
from surnn.layer import SelectiveUpdateGRU
from surnn.ops import su_gru

TARGET_RATE = 0.17


def rhythm_at(rate: float, T: int, H: int, width: float, seed: int = 0):
    """The paper's gate (learned rhythm, free per-neuron phases, 4 frequencies) with its
    bias shifted by one constant so that exactly ``rate`` of the [T, H] updates are open
    (the init's rate is only approximate). Returns (g, active_eval, active_train) where
    training adds the near-threshold neurons of the bounded surrogate (|a| < width)."""
    torch.manual_seed(seed)
    gate = build_gate(H, H, {"kind": "rhythm", "init_rate": rate, "width": width, "n_freqs": 4})
    with torch.no_grad():
        a = gate.preactivation(T)
        shift = torch.quantile(a.flatten().double(), 1 - rate).float()
        a = a - shift
    return (a > 0).float(), a > 0, (a > 0) | (a.abs() < width)


def stream_layer(gru: torch.nn.GRU, T: int, width: float, impl: str) -> SelectiveUpdateGRU:
    """A ``SelectiveUpdateGRU`` in eval mode with ``gru``'s weights whose gate is the one
    ``rhythm_at(TARGET_RATE, T, H, width)`` gives (same seed and construction; the shift
    is the gate's ``rate_offset``, as rate control leaves it), checked equal."""
    H = gru.hidden_size
    gate = {"kind": "rhythm", "init_rate": TARGET_RATE, "width": width, "n_freqs": 4}
    torch.manual_seed(0)
    su = SelectiveUpdateGRU(gru.input_size, H, batch_first=True, gate=gate, impl=impl)
    su.load_state_dict(gru.state_dict(), strict=False)
    su.eval()
    gate = su.gates[0]
    gate.enable_rate_control()
    with torch.no_grad():
        a = gate.preactivation(T)
        gate.rate_offset.fill_(-torch.quantile(a.flatten().double(), 1 - TARGET_RATE).float())
        g, _ = gate(T, dtype=torch.float32)
    assert torch.equal(g, rhythm_at(TARGET_RATE, T, H, width)[0]), "the layer's gate differs"
    return su


#: The surrogates the ``surrogate`` setting times: (kind, half-width); ``ste`` is the LRA suRNN
#: presets' (configs/experiment/lra/*_surnn.yaml), the triangle of width 1 the layer's default.
SURROGATES = (("ste", None), ("triangle", 1.0), ("triangle", 0.3), ("triangle", 0.1))
#: The ``surrogate`` setting's layer shapes, tag -> (B, T, D, H, lengths): the ``big`` target's
#: layer (B=32 T=1024 D=H=512), the pixel presets' (sMNIST: batch 50, 784 steps, width 256) and
#: the demo ListOps' (batch 64, width 64, padded lengths 20..150 as the demo's data).
SURROGATE_SHAPES = {
    "big": (32, 1024, 512, 512, None),
    "smnist": (50, 784, 256, 256, None),
    "demo": (64, 150, 64, 64, (20, 150)),
}

#: The ``stream`` setting's one sequence (B, T, D, H): the paper's sMNIST shape.
STREAM_SHAPE = (1, 784, 1, 256)


#: The ``crossover`` setting: ((B, T, D, H), update rates) where the compiled kernel and
#: the eager path are compared.
CROSSOVER_SHAPES = [
    ((32, 1024, 512, 512), (0.3, 0.5, 0.75, 1.0)),
    ((32, 512, 256, 256), (1.0,)),
    ((32, 221, 64, 64), (0.5, 0.75, 1.0)),
    ((32, 221, 128, 128), (0.5, 0.75, 1.0)),
]


def surrogate_name(kind: str, width: float | None) -> str:
    """``ste`` or ``triangle w=0.3``: how a training row names its surrogate."""
    return kind if width is None else f"{kind} w={width:g}"


def preset_layer(
    gru: torch.nn.GRU, T: int, kind: str, width: float | None, impl: str
) -> SelectiveUpdateGRU:
    """A ``SelectiveUpdateGRU`` in training mode with ``gru``'s weights and the gate as the
    suRNN presets set it (learned rhythm, 4 fixed frequencies with periods 2 .. T, init and
    target rate 0.17 held by rate control) with surrogate ``kind`` of half-width ``width``
    (None: the layer's default)."""
    gate = {
        "kind": "rhythm",
        "n_freqs": 4,
        "period_min": 2.0,
        "period_max": float(T),
        "learn_freqs": False,
        "init_rate": TARGET_RATE,
        "target_rate": TARGET_RATE,
        "rate_control": "bias",
        "surrogate": kind,
        **({} if width is None else {"width": width}),
    }
    torch.manual_seed(0)
    su = SelectiveUpdateGRU(gru.input_size, gru.hidden_size, batch_first=True, gate=gate, impl=impl)
    su.load_state_dict(gru.state_dict(), strict=False)
    return su.train()


# ------------------------------------------------------------------ the settings' pairs
def _layer(B, T, D, H, seed=0):
    """nn.GRU(D, H) seeded, its weights, an input [B, T, D] (and a copy that takes a
    gradient) and a zero initial state."""
    torch.manual_seed(seed)
    gru = torch.nn.GRU(D, H, batch_first=True)
    w = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    x = torch.randn(B, T, D)
    return gru, w, x, x.clone().requires_grad_(), torch.zeros(B, H)


def _infer(fn):
    def run():
        with torch.no_grad():
            fn()

    return run


def _train_step(w, xg, fn):
    def run():
        for p in [*w, xg]:
            p.grad = None
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()

    return run


def _sizes(B, T, D, H, g=None, active=None, **more) -> dict:
    """A setting's sizes: the layer's, the fraction of updates its gate ``g`` opens and the
    fraction computed in training (``active``), then ``more``."""
    out = {"B": B, "T": T, "D": D, "H": H}
    if g is not None:
        out["rate"] = float(g.mean())
    if active is not None:
        out["train_active_rate"] = float(active.float().mean())
    return {**out, **more}


class Pairs:
    """The pairs of one ``--suite targets`` run (in the order they run and print) and each
    setting's sizes, for the op's ``impl`` and the triangle of half-width ``width``."""

    def __init__(self, impl: str, width: float):
        self.impl, self.width = impl, width
        self.pairs: list[dict] = []
        self.info: dict[str, dict] = {}

    def add(self, setting, name, base, base_fn, case, case_fn, target, extra=None) -> None:
        if "train" in case and "surrogate" not in (extra or {}):  # the op, its active set
            extra = {**(extra or {}), "surrogate": surrogate_name("triangle", self.width)}
        self.pairs.append(
            {
                "setting": setting,
                "name": name,
                "baseline": base,
                "case": case,
                "base_fn": base_fn,
                "case_fn": case_fn,
                "target": target,
                **(extra or {}),
            }
        )


def _big(p: Pairs) -> None:
    """B=32 T=1024 D=H=512: inference against nn.GRU and the op at rate 1 (this kernel and
    the eager path), a training step against nn.GRU."""
    B, T, D, H = 32, 1024, 512, 512
    impl = p.impl
    gru, w, x, xg, h0 = _layer(B, T, D, H)
    g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, p.width)
    ones, all_on = torch.ones(T, H), torch.ones(T, H, dtype=torch.bool)
    p.info["big"] = _sizes(B, T, D, H, g, a_tr)
    su = _infer(lambda: su_gru(x, h0, *w, g, a_ev, impl=impl))
    for name, base, base_fn in [
        ("inference vs nn.GRU", "nn.GRU fwd", _infer(lambda: gru(x))),
        (
            "inference vs rate 1 (same kernel)",
            f"su {impl} rate 1 fwd",
            _infer(lambda: su_gru(x, h0, *w, ones, all_on, impl=impl)),
        ),
        (
            "inference vs rate 1 (eager cpu path)",
            "su cpu rate 1 fwd",
            _infer(lambda: su_gru(x, h0, *w, ones, all_on, impl="cpu")),
        ),
    ]:
        p.add("big", name, base, base_fn, f"su {impl} fwd", su, 4.0)
    p.add(
        "big",
        "training step vs nn.GRU",
        "nn.GRU train",
        _train_step(w, xg, lambda: gru(xg)),
        f"su {impl} train",
        _train_step(w, xg, lambda: su_gru(xg, h0, *w, g, a_tr, impl=impl)),
        2.0,
    )


def _small(p: Pairs) -> None:
    """Small layers (H=64/128, T=221/1000, B=32): a training step against nn.GRU's."""
    for H, T in [(64, 221), (64, 1000), (128, 221), (128, 1000)]:
        B, D = 32, H
        gru, w, x, xg, h0 = _layer(B, T, D, H)
        g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, p.width)
        tag = f"small H={H} T={T}"
        p.info[tag] = _sizes(B, T, D, H, g, a_tr)
        base = _train_step(w, xg, lambda gru=gru, xg=xg: gru(xg))
        # the eager path only at the reference point (H=64, T=221): time
        for which in (p.impl, "cpu") if (H, T) == (64, 221) else (p.impl,):
            p.add(
                tag,
                f"training step vs nn.GRU ({which})",
                "nn.GRU train",
                base,
                f"su {which} train",
                _train_step(
                    w,
                    xg,
                    lambda xg=xg, h0=h0, w=w, g=g, a=a_tr, which=which: su_gru(
                        xg, h0, *w, g, a, impl=which
                    ),
                ),
                1.0,
            )


def _padded(p: Pairs) -> None:
    """LRA-like batches (lengths T/8..T) against nn.GRU both ways: over the padded batch
    (every step computed; what a padded harness runs) and packed (skips the padding, but
    its CPU backward runs step by step)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    impl = p.impl
    for H, T in [(64, 221), (128, 1000)]:
        B, D = 32, H
        gru, w, x, xg, h0 = _layer(B, T, D, H)
        g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, p.width)
        lens = torch.randint(T // 8, T + 1, (B,), generator=torch.Generator().manual_seed(T))
        lens[0] = T
        tag = f"padded H={H} T={T}"
        p.info[tag] = _sizes(B, T, D, H, g, a_tr, valid_fraction=float(lens.sum()) / (B * T))

        def packed(x, gru=gru, lens=lens):
            return gru(pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False))

        su_fwd = _infer(
            lambda x=x, h0=h0, w=w, g=g, a=a_ev, lens=lens: su_gru(x, h0, *w, g, a, lens, impl=impl)
        )
        su_train = _train_step(
            w,
            xg,
            lambda xg=xg, h0=h0, w=w, g=g, a=a_tr, lens=lens: su_gru(
                xg, h0, *w, g, a, lens, impl=impl
            ),
        )
        for how, name, fwd, train in [
            ("padded, dense", "nn.GRU", gru, gru),
            ("packed", "nn.GRU packed", packed, lambda x, packed=packed: packed(x)[0].data),
        ]:
            p.add(
                tag,
                f"inference vs nn.GRU ({how})",
                f"{name} fwd",
                _infer(lambda x=x, fwd=fwd: fwd(x)),
                f"su {impl} fwd",
                su_fwd,
                1.0,
            )
            p.add(
                tag,
                f"training step vs nn.GRU ({how})",
                f"{name} train",
                _train_step(w, xg, lambda xg=xg, train=train: train(xg)),
                f"su {impl} train",
                su_train,
                1.0,
            )


def _stream(p: Pairs) -> None:
    """One sequence through the public layer (eval, no gradients), its gate the op's g:
    against the same layer with every gate open and against nn.GRU; the op against itself
    at rate 1; the layer's own time per call (one step, 20 calls a repetition)."""
    B, T, D, H = STREAM_SHAPE
    impl = p.impl
    gru, w, x, xg, h0 = _layer(B, T, D, H)
    g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, p.width)
    ones, all_on = torch.ones(T, H), torch.ones(T, H, dtype=torch.bool)
    su = stream_layer(gru, T, p.width, impl)
    p.info["stream"] = _sizes(B, T, D, H, g)
    case = _infer(lambda: su(x))

    def every_gate_open():
        with torch.no_grad(), all_open():
            su(x)

    per_step = {"per_step": True}
    p.add(
        "stream",
        "layer inference vs every gate open (same layer)",
        "SelectiveUpdateGRU every gate open",
        every_gate_open,
        "SelectiveUpdateGRU",
        case,
        5.3,
        per_step,
    )
    p.add(
        "stream",
        "layer inference vs nn.GRU (B=1)",
        "nn.GRU fwd",
        _infer(lambda: gru(x)),
        "SelectiveUpdateGRU",
        case,
        1.0,
        per_step,
    )
    p.add(
        "stream",
        "op inference vs every gate open (same kernel)",
        f"su {impl} rate 1 fwd",
        _infer(lambda: su_gru(x, h0, *w, ones, all_on, impl=impl)),
        f"su {impl} fwd",
        _infer(lambda: su_gru(x, h0, *w, g, a_ev, impl=impl)),
        5.3,
        per_step,
    )
    # The layer's own time per call: one step (T=1), the same gate row, 20 calls a
    # repetition, layer minus op.
    x1, calls = x[:, :1].contiguous(), 20
    with torch.no_grad():
        g1, a1 = su.gates[0](1, x1, device=x1.device, dtype=x1.dtype)
    p.info["stream T=1"] = {**p.info["stream"], "T": 1, "rate": float(g1.mean())}

    def repeat(fn):
        def run():
            with torch.no_grad():
                for _ in range(calls):
                    fn()

        return run

    p.add(
        "stream T=1",
        "the layer's per-call overhead (layer vs op)",
        f"su {impl} fwd",
        repeat(lambda: su_gru(x1, h0, *w, g1, a1, impl=impl)),
        "SelectiveUpdateGRU",
        repeat(lambda: su(x1)),
        None,  # reported, not a target: the row measures the layer's overhead per call
        {"overhead_calls": calls},
    )


def _surrogate(p: Pairs) -> None:
    """A training step through the public layer as the presets train it (rate control
    steering the gate, the gate's autograd, the kernel's forward and backward) under each
    surrogate, against nn.GRU's over the same (padded) batch."""
    for shape, (B, T, D, H, span) in SURROGATE_SHAPES.items():
        gru, w, x, xg, h0 = _layer(B, T, D, H)
        lens = None
        if span is not None:
            gen = torch.Generator().manual_seed(T)
            lens = torch.randint(span[0], span[1] + 1, (B,), generator=gen)
            lens[0] = T
        tag = f"surrogate {shape}"
        p.info[tag] = _sizes(B, T, D, H, rate=TARGET_RATE)
        if lens is not None:
            p.info[tag]["valid_fraction"] = float(lens.sum()) / (B * T)
        base = _train_step(w, xg, lambda gru=gru, xg=xg: gru(xg))
        for kind, wd in SURROGATES:
            su = preset_layer(gru, T, kind, wd, p.impl)
            params = [*su.parameters()]
            su(xg, lengths=lens)  # the active fraction this surrogate computes in training
            rate, act = float(su.last_update_rate[0]), float(su.last_active_rate[0])
            name = surrogate_name(kind, wd)
            p.add(
                tag,
                f"training step vs nn.GRU ({name})",
                "nn.GRU train",
                base,
                f"SelectiveUpdateGRU train ({name})",
                _train_step(params, xg, lambda su=su, xg=xg, lens=lens: su(xg, lengths=lens)),
                1.0,
                {
                    "surrogate": name,
                    "surrogate_kind": kind,
                    "surrogate_width": 1.0 if wd is None and kind != "ste" else wd,
                    "update_rate": rate,
                    "train_active_rate": act,
                },
            )


def _crossover(p: Pairs) -> None:
    """Where auto should stop picking the compiled kernel: it against the eager path, by
    update rate, at the shapes of ``CROSSOVER_SHAPES``."""
    for (B, T, D, H), rates in CROSSOVER_SHAPES:
        _crossover_shape(p, B, T, D, H, rates)


def _crossover_shape(p: Pairs, B, T, D, H, rates) -> None:
    gru, w, x, xg, h0 = _layer(B, T, D, H)
    for rate in rates:
        g, a_ev, a_tr = rhythm_at(rate, T, H, p.width)
        tag = f"crossover H={H} T={T} rate {rate:g}"
        p.info[tag] = _sizes(B, T, D, H, g, a_tr)

        def fwd(impl, g=g, a=a_ev):
            return _infer(lambda: su_gru(x, h0, *w, g, a, impl=impl))

        def train(impl, g=g, a=a_tr):
            return _train_step(w, xg, lambda: su_gru(xg, h0, *w, g, a, impl=impl))

        for mode, run, case in (("inference", "fwd", fwd), ("training", "train", train)):
            p.add(
                tag,
                f"{mode}: compiled vs eager cpu",
                f"su cpu {run}",
                case("cpu"),
                f"su compiled {run}",
                case("compiled"),
                1.0,
            )


#: The ``--settings`` of ``--suite targets``, in the order they run.
SETTINGS = {
    "big": _big,
    "small": _small,
    "padded": _padded,
    "stream": _stream,
    "surrogate": _surrogate,
    "crossover": _crossover,
}
