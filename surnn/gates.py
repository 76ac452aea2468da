"""Update gates for selective-update layers: the kinds, their options and ``build_gate``.

The paper's rhythm gate depends on time only:
    a[t, i] = b_i + sum_k alpha[i, k] * sin(omega_k * t + phi[i, k]),   g = Heaviside(a)
so the set of open neurons at step t is the same for the whole batch and known before
the sequence is read. Forward uses the hard step; backward uses a surrogate psi(a).

Every gate returns ``(g, active)``: ``g`` the gate values ([T, H], or [B, T, H] for the
input-dependent ``content`` gate) and ``active`` (bool, same shape) where the layer must
compute the GRU update f: the open neurons, plus, when training the gate with a bounded
surrogate (``triangle``/``rect`` of width w), the closed neurons with |a| < w (they get
a gradient). With ``ste`` every neuron is active while the gate is trained.

Kinds (``build_gate(kind=...)``): ``rhythm`` (the paper's), ``soft`` (sigmoid of the
rhythm, no binarisation), ``random`` (a frozen random rhythm), ``interval`` (open every
``period`` steps), ``open`` (always open: equals nn.GRU), ``content`` (threshold of a
learned linear function of the input, per sample), ``input`` (the paper's input-threshold
ablation: neuron i open when its input x[b, t, i] > 0, nothing learned).

The rhythm's initial values (its frequency bank; the ``uniform``, ``timescale`` and
``clockwork`` families; explicit ``params``) come from ``surnn.gate_init``; ``frozen`` keeps
them fixed. The hard step and its surrogate gradients are ``surnn.surrogate``'s.

Rate control: ``Gate.enable_rate_control()`` gives a gate with a pre-activation (rhythm,
soft, random, content) a scalar buffer ``rate_offset`` added to every neuron's
pre-activation; ``SelectiveUpdateGRU`` solves for it in each training forward so that the
layer's update rate equals its ``target_rate`` (see there).

``all_open()`` is a context manager under which every gate returns all ones (and every
neuron active): the trainer counts dense-equivalent FLOPs with it.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any

import torch
from torch import nn

from surnn.checks import between, boolean, int_at_least, number, one_of, positive
from surnn.errors import ConfigError
from surnn.gate_init import RHYTHM_INITS, bank_period_max, initial_values
from surnn.ops import step_tables
from surnn.surrogate import Heaviside, check_surrogate
from surnn.utils import optim_hint

_FORCE_OPEN = [0]


@contextlib.contextmanager
def all_open():
    """Within this context every gate returns all ones (used to count dense FLOPs)."""
    _FORCE_OPEN[0] += 1
    try:
        yield
    finally:
        _FORCE_OPEN[0] -= 1


def forced_open() -> bool:
    return _FORCE_OPEN[0] > 0


#: the open fraction of a neuron at initialisation (``init_rate`` of rhythm and content)
OPEN_FRACTION = between(0, 1, lo_open=True)
#: a gate's own learning rate (a trainer hint; null: the optimizer's)
GATE_LR = positive(optional=True)


class Gate(nn.Module):
    """Base class: ``forward(T, x=None, t0=0) -> (g, active)``; see the module docstring.

    ``t0`` is the time of the first step: a layer that reads a long stream in windows
    (truncated BPTT) passes the steps already read, so a time-driven gate runs on as over
    one sequence instead of restarting at every window."""

    time_only: bool = True
    #: True when the gate has a pre-activation that a shared offset can shift (rate control).
    controllable: bool = False

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size

    def enable_rate_control(self) -> None:
        """Add the ``rate_offset`` buffer (0 at first; saved in the state dict)."""
        if not self.controllable:
            raise ConfigError(
                f"gate kind {type(self).__name__} has no pre-activation to shift, so "
                "target_rate cannot steer it; use rhythm, soft, random or content, or unset "
                "target_rate"
            )
        if not hasattr(self, "rate_offset"):
            self.register_buffer("rate_offset", torch.zeros(()))

    def open_fraction(self, a: torch.Tensor) -> torch.Tensor:
        """The gate value for pre-activation ``a`` (forward only): what rate control
        averages."""
        return (a > 0).to(a.dtype)

    def open_margin(self) -> float:
        """How far beyond the pre-activation's range the gate is fully open or closed."""
        return 1e-3

    def _offset(self, a: torch.Tensor) -> torch.Tensor:
        off = getattr(self, "rate_offset", None)
        return a if off is None else a + off.to(a.dtype)

    def gate(self, T: int, x: torch.Tensor | None, device, dtype, t0=0):  # pragma: no cover
        raise NotImplementedError

    def forward(self, T: int, x: torch.Tensor | None = None, device=None, dtype=None, t0=0):
        grad = torch.is_grad_enabled()
        if forced_open():
            shape = (T, self.hidden_size)
            if not self.time_only and x is not None:
                shape = (x.shape[0], T, self.hidden_size)
            elif not grad and not torch.compiler.is_compiling():  # inference: a served table
                return step_tables.serve(
                    self,
                    "all_open",
                    (str(device), dtype),
                    T,
                    lambda n: (
                        torch.ones(n, self.hidden_size, device=device, dtype=dtype),
                        torch.ones(n, self.hidden_size, device=device, dtype=torch.bool),
                    ),
                )
            g = torch.ones(shape, device=device, dtype=dtype)
            return g, torch.ones(shape, device=device, dtype=torch.bool)
        if self.time_only and not t0 and not grad and not torch.compiler.is_compiling():
            return self._from_table(T, device, dtype)
        return self.gate(T, x, device, dtype, t0)

    def _from_table(self, T: int, device, dtype):
        """Inference (no gradients) of a time-only gate, from a table of its first steps
        (``surnn.ops.step_tables``): at batch 1 a rhythm's [T, H, K] sinusoids cost more than
        the recurrence they gate. Recomputed when a parameter or buffer changes or moves.
        Not used while torch.compile traces (a table's key reads storage pointers, which a
        graph cannot): the compiled graph computes the gate itself."""
        key = step_tables.state_key(self, device, dtype)
        return step_tables.serve(
            self, "gate", key, T, lambda n: self.gate(n, None, device, dtype, 0)
        )


class BinaryGate(Gate):
    """A hard gate on a pre-activation ``a`` with a surrogate gradient."""

    controllable = True

    def __init__(self, hidden_size: int, surrogate: str = "triangle", width: float = 1.0):
        super().__init__(hidden_size)
        check_surrogate(surrogate, width)
        self.surrogate, self.width = surrogate, float(width)

    def preactivation(self, T: int, x, device, t0=0) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def gate(self, T, x, device, dtype, t0=0):
        a = self.preactivation(T, x, device, t0=t0)
        g = Heaviside.apply(a, self.surrogate, self.width)  # checked by the constructor
        open_ = a > 0
        if torch.is_grad_enabled() and a.requires_grad:
            if self.surrogate == "ste":
                active = torch.ones_like(open_)
            else:
                active = open_ | (a.abs() < self.width)
        else:
            active = open_
        return (g if dtype is None else g.to(dtype)), active


class RhythmGate(BinaryGate):
    """Learned per-neuron rhythm: a bias plus K sinusoids at shared frequencies.

    Args:
        hidden_size: neurons H.
        n_freqs: K, the number of shared frequencies.
        period_min, period_max: the frequency bank's periods, log-spaced (in steps).
            ``period_max=None``: ``period_scale * seq_len`` (or 1024 without ``seq_len``).
        seq_len: the longest sequence the layer will read (sets the default bank).
        period_scale: the slowest default period in sequence lengths.
        learn_freqs: learn the shared frequencies (log-parametrised) or keep them fixed.
        init: ``uniform``, ``timescale`` or ``clockwork`` (see ``surnn.gate_init``).
        init_rate: ``uniform``: the expected fraction of steps a neuron is open.
        rate_min, rate_max: ``timescale``/``clockwork``: each neuron's open fraction is
            drawn log-uniformly between these.
        amplitude: ``uniform``: initial alpha (per neuron and frequency).
        edge_slope: ``timescale``/``clockwork``: the pre-activation's slope (per step) where
            a window opens and closes.
        surrogate, width: surrogate gradient for the Heaviside step.
        lr: optional learning rate for the gate parameters (trainer parameter hint).
        frozen: keep every gate parameter fixed (the ``random`` kind; with ``params``: a
            hand-set or reproduced gate).
        group_size: neurons per rhythm. 1 (the paper): every neuron has its own bias,
            amplitudes and phases. G > 1: contiguous groups of G neurons share one rhythm
            (H/G rhythms), so the open neurons of a step are whole groups: contiguous
            weight rows the fast paths compute without gathering (CPU slab lanes; on GPU,
            with G a multiple of 32, whole kernel tiles are skipped). Free per-neuron
            phases scatter the open neurons, and gathering them costs most of the gain.
        params: explicit values for any of ``bias`` [R], ``alpha`` [R, K], ``phi`` [R, K],
            ``log_omega`` [K] (R = H / group_size rhythms): a mapping of nested lists or
            tensors, or the path of a ``.json`` (that mapping) or ``.pt`` file; they replace
            the initial values.
    """

    def __init__(
        self,
        hidden_size: int,
        n_freqs: int = 4,
        period_min: float = 2.0,
        period_max: float | None = None,
        seq_len: int | None = None,
        period_scale: float = 4.0,
        learn_freqs: bool = False,
        init: str = "uniform",
        init_rate: float = 0.5,
        rate_min: float = 0.005,
        rate_max: float = 0.5,
        amplitude: float = 1.0,
        edge_slope: float = 0.01,
        surrogate: str = "triangle",
        width: float = 1.0,
        lr: float | None = None,
        frozen: bool = False,
        group_size: int = 1,
        params: Any = None,
    ):
        super().__init__(hidden_size, surrogate, width)
        if not (int_at_least(1).ok(group_size) and hidden_size % group_size == 0):
            raise ConfigError.option(
                "group_size",
                group_size,
                f"expected a positive integer dividing the hidden size {hidden_size} (neurons "
                "per shared rhythm; 1 = per neuron)",
            )
        self.group_size = group_size
        n_rhythms = hidden_size // self.group_size
        int_at_least(1).check("n_freqs", n_freqs)
        one_of(*RHYTHM_INITS).check("init", init)
        OPEN_FRACTION.check("init_rate", init_rate)
        between(0, 1, lo_open=True, hi_open=True).check("rate_min", rate_min)
        between(0, 1, lo_open=True, hi_open=True).check("rate_max", rate_max)
        if rate_min > rate_max:
            raise ConfigError.option(
                "rate_min",
                rate_min,
                f"expected at most rate_max={rate_max} (each neuron's open fraction at "
                "initialisation is drawn between them)",
            )
        positive().check("edge_slope", edge_slope)
        number().check("amplitude", amplitude)
        int_at_least(1, optional=True).check("seq_len", seq_len)
        positive().check("period_scale", period_scale)
        positive().check("period_min", period_min)
        positive(optional=True).check("period_max", period_max)
        period_max = bank_period_max(period_min, period_max, seq_len, period_scale)
        if period_min > period_max:
            raise ConfigError.option(
                "period_min", period_min, f"expected at most period_max={period_max} (steps)"
            )
        boolean().check("learn_freqs", learn_freqs)
        boolean().check("frozen", frozen)
        GATE_LR.check("lr", lr)
        self.n_freqs, self.init = n_freqs, init
        init_values = initial_values(
            n_rhythms,
            n_freqs,
            period_min,
            period_max,
            init,
            init_rate,
            rate_min,
            rate_max,
            amplitude,
            edge_slope,
            params,
        )
        for name, value in init_values.items():
            learn = not frozen and (name != "log_omega" or learn_freqs)
            if learn:
                p = optim_hint(nn.Parameter(value), lr=lr, weight_decay=0.0)
                self.register_parameter(name, p)
            else:
                self.register_buffer(name, value)

    def preactivation(self, T: int, x=None, device=None, dtype=None, t0=0) -> torch.Tensor:
        """a: [T, H] (float32) at times t0 .. t0 + T - 1."""
        dev = device or self.alpha.device
        if t0:  # a late window of a long stream: float64 phases keep omega * t exact
            t = torch.arange(t0, t0 + T, device=dev, dtype=torch.float64)
            omega = self.log_omega.double().exp()
            phase = (t[:, None, None] * omega[None, None, :]).remainder(2 * math.pi).float()
            phase = phase + self.phi.float()[None]
        else:
            t = torch.arange(T, device=dev, dtype=torch.float32)
            omega = self.log_omega.float().exp()
            phase = t[:, None, None] * omega[None, None, :] + self.phi.float()[None]  # [T,H,K]
        a = self.bias.float() + (self.alpha.float()[None] * torch.sin(phase)).sum(-1)
        if self.group_size > 1:  # [T, H/G] -> [T, H]; gradients sum over each group
            a = a.repeat_interleave(self.group_size, dim=1)
        a = self._offset(a)
        return a if dtype is None else a.to(dtype)


def hold_stats(g: torch.Tensor, input_window, hold_window) -> dict[str, int]:
    """How a time-only gate ``g`` [T, H] holds across a delay: ``open_at_input`` neurons
    open at some step of ``input_window`` ([start, stop) steps), ``closed_through_hold``
    neurons closed at every step of ``hold_window``, and ``holders`` both (what they read at
    the input they keep unchanged through the delay); ``late_holders``: open at the input
    and closed through the last 90% of the hold window (they may take in a little of the
    delay, as a GRU neuron whose update gate is shut does, before they hold exactly)."""
    g = g.detach() > 0
    a, b = hold_window
    open_in = g[slice(*input_window)].any(0)
    closed = ~g[a:b].any(0)
    closed_late = ~g[b - (b - a) * 9 // 10 : b].any(0)
    return {
        "holders": int((open_in & closed).sum()),
        "late_holders": int((open_in & closed_late).sum()),
        "open_at_input": int(open_in.sum()),
        "closed_through_hold": int(closed.sum()),
    }


class RandomGate(RhythmGate):
    """Ablation: a rhythm drawn at initialisation and never trained (every parameter frozen)."""

    excluded = ("frozen",)  # fixed by the kind, not an option

    def __init__(self, hidden_size: int, **rhythm: Any):
        super().__init__(hidden_size, frozen=True, **rhythm)


class SoftGate(RhythmGate):
    """Ablation: g = sigmoid(a / temperature) of the rhythm, no binarisation (dense)."""

    excluded = ("frozen", "surrogate", "width")  # no Heaviside step, nothing frozen

    def __init__(self, hidden_size: int, temperature: float = 1.0, **rhythm: Any):
        super().__init__(hidden_size, **rhythm)
        self.temperature = float(positive().check("temperature", temperature))

    def open_fraction(self, a):
        return torch.sigmoid(a / self.temperature)

    def open_margin(self):
        return 30.0 * self.temperature  # sigmoid(30) = 1 - 1e-13

    def gate(self, T, x, device, dtype, t0=0):
        g = torch.sigmoid(self.preactivation(T, None, device, t0=t0) / self.temperature)
        return (g if dtype is None else g.to(dtype)), torch.ones_like(g, dtype=torch.bool)


class IntervalGate(Gate):
    """Ablation: neuron i is open when (t + offset_i) % period == 0 (rate 1/period).

    ``stagger`` spreads the offsets over the neurons in contiguous classes (neuron i has
    offset floor(i * period / H)), so each step updates one contiguous slab of about
    H / period neurons; without it every neuron opens at the same steps.
    """

    def __init__(self, hidden_size: int, period: int = 3, stagger: bool = True):
        super().__init__(hidden_size)
        self.period = int_at_least(1).check("period", period)
        boolean().check("stagger", stagger)
        off = torch.arange(hidden_size) * self.period // max(hidden_size, 1) if stagger else None
        self.register_buffer("offset", off if off is not None else torch.zeros(hidden_size).long())

    def gate(self, T, x, device, dtype, t0=0):
        t = torch.arange(t0, t0 + T, device=device or self.offset.device)
        g = (t[:, None] + self.offset.to(t.device)[None]) % self.period == 0
        return g.to(dtype or torch.float32), g


class OpenGate(Gate):
    """Ablation: always open; the layer equals torch.nn.GRU."""

    def gate(self, T, x, device, dtype, t0=0):
        g = torch.ones(T, self.hidden_size, device=device, dtype=dtype or torch.float32)
        return g, torch.ones_like(g, dtype=torch.bool)


class ContentGate(BinaryGate):
    """Ablation: input-dependent threshold gate, g[b, t] = Heaviside(W x[b, t] + c).

    Per sample, so the active set differs across the batch: the fast paths compute the
    union of active neurons over the batch at each step.
    """

    time_only = False

    def __init__(
        self,
        hidden_size: int,
        input_size: int,
        init_rate: float = 0.5,
        surrogate: str = "triangle",
        width: float = 1.0,
        lr: float | None = None,
    ):
        super().__init__(hidden_size, surrogate, width)
        OPEN_FRACTION.check("init_rate", init_rate)
        GATE_LR.check("lr", lr)
        self.proj = nn.Linear(input_size, hidden_size)
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(input_size))
        q = torch.special.ndtri(torch.tensor(min(init_rate, 1 - 1e-6))).item()
        nn.init.constant_(self.proj.bias, q)
        for p in self.proj.parameters():
            optim_hint(p, lr=lr, weight_decay=0.0)

    def preactivation(self, T, x, device, t0=0):
        if x is None:
            raise ConfigError("gate kind=content needs the layer input x")
        return self._offset(self.proj(x).float())


class InputThresholdGate(Gate):
    """Ablation (the paper's input-threshold gate): neuron i is open at (b, t) when its
    input x[b, t, i] > 0. Nothing is learned and no gradient flows through the gate; per
    sample, like ``content``. The layer input must have the hidden size (in the harness
    the mixer's input is d_model: set hidden_size null or equal to d_model), as the paper
    thresholds the input of the neuron itself. ``threshold`` moves the cut (default 0)."""

    time_only = False

    def __init__(self, hidden_size: int, input_size: int, threshold: float = 0.0):
        super().__init__(hidden_size)
        if input_size != hidden_size:
            raise ConfigError(
                f"gate kind=input thresholds each neuron's own input, so it needs input size "
                f"= hidden size (got {input_size} and {hidden_size}); set the hidden size to "
                "the input size (in the harness: model.options.hidden_size=null)"
            )
        self.threshold = float(number().check("threshold", threshold))

    def gate(self, T, x, device, dtype, t0=0):
        if x is None:
            raise ConfigError("gate kind=input needs the layer input x")
        open_ = x.detach() > self.threshold
        return open_.to(dtype or torch.float32), open_


#: Gate kinds: ``build_gate(kind=...)`` and ``model.options.gate.kind`` choose from this table.
GATES: dict[str, type[Gate]] = {
    "rhythm": RhythmGate,
    "soft": SoftGate,
    "random": RandomGate,
    "interval": IntervalGate,
    "open": OpenGate,
    "content": ContentGate,
    "input": InputThresholdGate,
}
_SIZES = ("self", "hidden_size", "input_size")


def gate_options(kind: str) -> dict[str, Any]:
    """The options a gate kind takes, with their defaults, read from its constructor (and,
    through ``**kwargs``, from its base classes'), less what the kind fixes itself."""
    out: dict[str, Any] = {}
    fixed = set(getattr(GATES[kind], "excluded", ()))
    for cls in GATES[kind].__mro__:
        if not (isinstance(cls, type) and issubclass(cls, Gate)):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        for p in params:
            named = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            if named and p.name not in _SIZES and p.name not in fixed:
                out.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out


def describe(kind: str) -> str:
    """'n_freqs=4, period_min=2.0, ...' for error messages."""
    return ", ".join(f"{k}={v}" for k, v in gate_options(kind).items()) or "no options"


def build_gate(hidden_size: int, input_size: int, options: dict[str, Any] | None) -> Gate:
    """A gate from its config dict: ``kind`` plus options of that kind. An option set to
    None takes the kind's default; an option the kind does not take is an error."""
    opts = {k: v for k, v in dict(options or {}).items() if v is not None}
    kind = one_of(*GATES).check("kind", opts.pop("kind", "rhythm"))
    valid = gate_options(kind)
    foreign = sorted(set(opts) - set(valid))
    if foreign:
        raise ConfigError(
            f"gate kind={kind!r} takes no option {', '.join(foreign)}; its options are "
            f"{describe(kind)} (unset the others or choose another kind)"
        )
    cls = GATES[kind]
    if "input_size" in inspect.signature(cls.__init__).parameters:
        return cls(hidden_size, input_size, **opts)
    return cls(hidden_size, **opts)
