"""Update gates for selective-update layers and their surrogate gradients.

The paper's rhythm gate depends on time only:
    a[t, i] = b_i + sum_k alpha[i, k] * sin(omega_k * t + phi[i, k]),   g = Heaviside(a)
so the set of open neurons at step t is the same for the whole batch and known before
the sequence is read. Forward uses the hard step; backward uses a surrogate psi(a).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from surnn.errors import ConfigError
from surnn.mixer import optim_hint

SURROGATES = ("ste", "triangle", "rect")


def surrogate_grad(a: torch.Tensor, kind: str, width: float) -> torch.Tensor:
    """psi(a): the derivative used for Heaviside(a) in the backward pass.

    ``ste`` is 1 everywhere (dense work in training); ``triangle`` and ``rect`` are zero
    for |a| >= width, so only open and near-threshold neurons need f in training.
    """
    if kind == "ste":
        return torch.ones_like(a)
    if kind == "triangle":
        return (1.0 - a.abs() / width).clamp(min=0.0)
    if kind == "rect":
        return (a.abs() < width).to(a.dtype)
    raise ConfigError(f"gate surrogate={kind!r}: expected one of {', '.join(SURROGATES)}")


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, kind, width):
        ctx.save_for_backward(a)
        ctx.kind, ctx.width = kind, width
        return (a > 0).to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * surrogate_grad(a, ctx.kind, ctx.width), None, None


def heaviside(a: torch.Tensor, surrogate: str = "triangle", width: float = 1.0) -> torch.Tensor:
    """Hard step forward, surrogate gradient backward."""
    if surrogate not in SURROGATES:
        raise ConfigError(f"gate surrogate={surrogate!r}: expected one of {', '.join(SURROGATES)}")
    return _Heaviside.apply(a, surrogate, float(width))


class RhythmGate(nn.Module):
    """Learned per-neuron rhythm: a bias plus K sinusoids at shared frequencies.

    Args:
        hidden_size: neurons H.
        n_freqs: K, the number of shared frequencies.
        period_min, period_max: the frequency bank's periods, log-spaced (in steps).
        learn_freqs: learn the shared frequencies (log-parametrised) or keep them fixed.
        init_rate: the expected fraction of steps a neuron is open at initialisation.
        amplitude: initial alpha (per neuron and frequency).
        surrogate, width: surrogate gradient for the Heaviside step.
        lr: optional learning rate for the gate parameters (trainer parameter hint).
    """

    def __init__(
        self,
        hidden_size: int,
        n_freqs: int = 4,
        period_min: float = 2.0,
        period_max: float = 1024.0,
        learn_freqs: bool = False,
        init_rate: float = 0.5,
        amplitude: float = 1.0,
        surrogate: str = "triangle",
        width: float = 1.0,
        lr: float | None = None,
    ):
        super().__init__()
        if not 0.0 < init_rate <= 1.0:
            raise ConfigError(f"gate init_rate={init_rate}: expected a value in (0, 1]")
        if n_freqs < 1:
            raise ConfigError(f"gate n_freqs={n_freqs}: expected at least 1")
        self.hidden_size, self.n_freqs = hidden_size, n_freqs
        self.surrogate, self.width = surrogate, float(width)
        periods = torch.logspace(math.log10(period_min), math.log10(period_max), n_freqs)
        log_omega = torch.log(2 * math.pi / periods)
        if learn_freqs:
            self.log_omega = optim_hint(nn.Parameter(log_omega), lr=lr, weight_decay=0.0)
        else:
            self.register_buffer("log_omega", log_omega)
        self.alpha = optim_hint(
            nn.Parameter(torch.full((hidden_size, n_freqs), float(amplitude))), lr=lr, weight_decay=0.0
        )
        self.phi = optim_hint(
            nn.Parameter(torch.rand(hidden_size, n_freqs) * 2 * math.pi), lr=lr, weight_decay=0.0
        )
        # With random phases the sinusoid sum is roughly normal with variance K*alpha^2/2,
        # so this bias opens each neuron about init_rate of the time.
        sigma = abs(amplitude) * math.sqrt(n_freqs / 2)
        q = torch.special.ndtri(torch.tensor(min(init_rate, 1 - 1e-6))).item()
        self.bias = optim_hint(nn.Parameter(torch.full((hidden_size,), sigma * q)), lr=lr, weight_decay=0.0)

    def preactivation(self, T: int, device=None, dtype=None) -> torch.Tensor:
        """a: [T, H]."""
        t = torch.arange(T, device=device or self.alpha.device, dtype=torch.float32)
        omega = self.log_omega.float().exp()
        phase = t[:, None, None] * omega[None, None, :] + self.phi.float()[None]  # [T, H, K]
        a = self.bias.float() + (self.alpha.float()[None] * torch.sin(phase)).sum(-1)
        return a if dtype is None else a.to(dtype)

    def forward(self, T: int, device=None, dtype=None) -> torch.Tensor:
        """g: [T, H] in {0, 1} (surrogate gradient to the gate parameters)."""
        a = self.preactivation(T, device)
        g = heaviside(a, self.surrogate, self.width)
        return g if dtype is None else g.to(dtype)
