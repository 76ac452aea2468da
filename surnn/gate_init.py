"""The rhythm gate's initial values: its frequency bank and the initialisation families.

The gate (``surnn.gates.RhythmGate``) is a[t, i] = b_i + sum_k alpha[i, k] sin(omega_k t +
phi[i, k]); this module gives its tensors ``bias`` [R], ``alpha`` [R, K], ``phi`` [R, K] and
``log_omega`` [K] (R rhythms, K frequencies) their first values, always within that formula.

The bank: K periods log-spaced from ``period_min`` to ``period_max``; without
``period_max`` the slowest period is ``period_scale`` times ``seq_len`` (the longest
sequence the layer reads; the harness passes the task's), and ``DEFAULT_PERIOD_MAX`` steps
when neither is known.

The families (``RhythmGate(init=...)``):

- ``uniform``: every neuron sums all K sinusoids of the bank at one amplitude with random
  phases, and one bias opens it ``init_rate`` of the time (short, frequent bursts).
- ``timescale`` and ``clockwork``: per-neuron timescales, as chrono initialisation gives
  LSTM units timescales spread log-uniformly up to the longest dependency (Tallec & Ollivier
  2018). Each neuron is dominated by one frequency of the bank (the neurons spread evenly
  over the K periods, the other amplitudes 0) and is open ``r_i P_k`` consecutive steps of
  each period P_k, with its open fraction ``r_i`` log-uniform in ``[rate_min, rate_max]``;
  the amplitude makes the pre-activation cross the threshold with slope ``edge_slope`` per
  step at both edges of the window, so one bias or phase step moves a window's edge by a
  similar number of steps whatever the period. ``clockwork`` starts every neuron's window
  at t = 0, as Clockwork RNN's modules all tick at t = 0 (on the slowest periods: open
  while a sequence begins, then closed for the rest of it); ``timescale`` puts each window
  at a random time of its period, as Phased LSTM draws its phase shifts.

``params`` sets any of the tensors explicitly, from a mapping or a ``.json``/``.pt`` file,
replacing what the family drew.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from surnn.errors import ConfigError

RHYTHM_INITS = ("uniform", "timescale", "clockwork")
#: the slowest period of the bank when neither period_max nor seq_len is given
DEFAULT_PERIOD_MAX = 1024.0
GATE_TENSORS = ("bias", "alpha", "phi", "log_omega")


def bank_period_max(
    period_min: float, period_max: float | None, seq_len: int | None, period_scale: float
) -> float:
    """The bank's slowest period: ``period_max`` when given, else ``period_scale`` times
    ``seq_len`` (``DEFAULT_PERIOD_MAX`` without it), at least ``period_min``."""
    if period_max is not None:
        return period_max
    period_max = period_scale * seq_len if seq_len else DEFAULT_PERIOD_MAX
    return max(period_max, period_min)


def initial_values(
    n: int,
    n_freqs: int,
    period_min: float,
    period_max: float,
    init: str,
    init_rate: float,
    rate_min: float,
    rate_max: float,
    amplitude: float,
    edge_slope: float,
    params: Any = None,
) -> dict[str, torch.Tensor]:
    """The first values of the tensors of ``n`` rhythms on a bank of ``n_freqs`` periods
    from ``period_min`` to ``period_max``, drawn by the family ``init`` (the options are
    ``RhythmGate``'s, checked there), then replaced by ``params`` where it names them."""
    periods = torch.logspace(math.log10(period_min), math.log10(period_max), n_freqs)
    omega = 2 * math.pi / periods
    if init == "uniform":
        alpha, phi, bias = uniform_init(n, n_freqs, init_rate, amplitude)
    else:
        alpha, phi, bias = timescale_init(
            n, omega, rate_min, rate_max, edge_slope, aligned=init == "clockwork"
        )
    values = {"log_omega": torch.log(omega), "alpha": alpha, "phi": phi, "bias": bias}
    if params is not None:
        values.update(explicit_params(params, values))
    return values


def uniform_init(n: int, K: int, init_rate: float, amplitude: float):
    """Every rhythm sums the K sinusoids at ``amplitude`` with random phases; with random
    phases the sum is roughly normal with variance K alpha^2 / 2, so this bias opens each
    neuron about ``init_rate`` of the time."""
    sigma = abs(amplitude) * math.sqrt(K / 2)
    q = torch.special.ndtri(torch.tensor(min(init_rate, 1 - 1e-6))).item()
    alpha = torch.full((n, K), float(amplitude))
    phi = torch.rand(n, K) * 2 * math.pi
    return alpha, phi, torch.full((n,), sigma * q)


def timescale_init(n: int, omega, rate_min, rate_max, edge_slope, aligned: bool):
    """Rhythm i rides on the bank's frequency k_i (the rhythms spread evenly over the K
    frequencies) and is open L_i = max(1, r_i P) consecutive steps of each period P, with
    r_i log-uniform in [rate_min, rate_max]: a = b + A cos(omega (t - c)) is positive for
    |t - c| < L / 2 when b = -A cos(pi L / P), and crosses 0 there with slope
    A omega sin(pi L / P) = edge_slope. The window's centre c is L / 2 - 1/2 (``aligned``:
    open at steps 0 .. L - 1 of every period) or uniform in [0, P). A window as long as
    its period (P <= 1 step) is a neuron open at every step (b = 1, A = 0)."""
    K = len(omega)
    k = torch.arange(n) * K // n
    w = omega[k].double()
    period = 2 * math.pi / w
    r = torch.exp(math.log(rate_min) + torch.rand(n).double() * math.log(rate_max / rate_min))
    length = torch.maximum(r * period, torch.ones_like(r))  # a window holds >= 1 step
    frac = length / period
    always = frac >= 1
    frac = frac.clamp(max=1 - 1e-6)  # (only used where the neuron is not always open)
    centre = length / 2 - 0.5 if aligned else torch.rand(n).double() * period
    amp = torch.where(always, 0.0, edge_slope / (w * torch.sin(math.pi * frac)))
    alpha = torch.zeros(n, K)
    phi = torch.rand(n, K) * 2 * math.pi  # the other frequencies: amplitude 0
    rows = torch.arange(n)
    alpha[rows, k] = amp.float()
    phi[rows, k] = (math.pi / 2 - w * centre).remainder(2 * math.pi).float()  # sin(x+pi/2)=cos x
    bias = torch.where(always, 1.0, -amp * torch.cos(math.pi * frac)).float()
    return alpha, phi, bias


def explicit_params(params: Any, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` (a mapping, or a .json/.pt file of one) as tensors shaped like ``like``."""
    source = "gate params"
    if isinstance(params, (str, Path)):
        path, source = Path(params), f"gate params={params}"
        if not path.is_file():
            raise ConfigError(
                f"{source}: no such file (a .json or .pt of {', '.join(GATE_TENSORS)})"
            )
        try:
            if path.suffix == ".json":
                params = json.loads(path.read_text())
            elif path.suffix in (".pt", ".pth"):
                params = torch.load(path, map_location="cpu", weights_only=True)
            else:
                raise ConfigError(f"{source}: expected a .json or .pt file")
        except (OSError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{source}: unreadable ({type(e).__name__}: {e})") from e
    if not hasattr(params, "items"):
        raise ConfigError(f"{source}: expected a mapping of {', '.join(GATE_TENSORS)}")
    out = {}
    for name, value in params.items():
        if name not in like:
            raise ConfigError(
                f"{source}: unknown tensor {name!r}; a rhythm gate has {', '.join(GATE_TENSORS)}"
            )
        try:
            t = torch.as_tensor(_plain(value), dtype=torch.float32).clone()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {name} is not numeric ({e})") from e
        if t.shape != like[name].shape:
            raise ConfigError(
                f"{source}: {name} has shape {list(t.shape)}; this gate needs "
                f"{list(like[name].shape)}"
            )
        if not torch.isfinite(t).all():
            raise ConfigError(f"{source}: {name} has non-finite values")
        out[name] = t
    return out


def _plain(value: Any) -> Any:
    """Nested sequences (a config's list nodes included) as plain lists; tensors as they are."""
    if isinstance(value, (torch.Tensor, int, float)):
        return value
    return [_plain(v) for v in value]
