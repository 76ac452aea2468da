"""S4D: a diagonal state-space layer (Gu, Gupta, Goel, Re, 2022) as a sequence mixer.

Per channel h (d_model of them) a complex diagonal SSM with N/2 modes (``d_state`` N, as in
the S4 repository, which keeps one of each conjugate pair):

    A = -exp(log_A_real) + i A_imag,  dt = exp(log_dt),  B = 1 (folded into C)
    ZOH:  dA = exp(dt A),  dB = (exp(dt A) - 1) / A
    kernel  K[l] = 2 Re( sum_n C_n dB_n dA_n^l )   (a Vandermonde product), l < L
    y = K * u (causal FFT convolution, size 2L) + D u  ->  GELU  ->  GLU(linear) or linear

Initialisation: S4D-Lin (A_imag = pi n) or S4D-Inv (A_imag = N/pi (N/(2n+1) - 1)), real
part -1/2, log dt uniform in [log dt_min, log dt_max]. A and dt carry optimizer hints
(own learning rate, no weight decay). ``bidirectional`` adds a second C for an
anti-causal kernel over lags -1..-(L-1), as in the S4 repository.

``mode="recurrent"`` runs the same layer as a linear recurrence (``step``); it gives the
same outputs as the convolution (tests check it). Padded inputs are zeroed first, so
outputs at valid positions do not depend on right padding in either direction.

FLOPs: the Vandermonde product is computed as one real batched matmul (counted by
FlopCounterMode, 4 * channels * d_model * N/2 * L), the FFTs through the formulas of
``baselines.flops``; pointwise work is not counted.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import baselines.flops  # noqa: F401  (FFT FLOP formulas)
from surnn.checks import between, boolean, int_at_least, one_of, positive
from surnn.errors import ConfigError
from surnn.harness.mixer import Mixer
from surnn.utils import optim_hint, valid_mask

INITS = ("lin", "inv")
MODES = ("conv", "recurrent")
OUTPUTS = ("glu", "linear")


class S4DKernel(nn.Module):
    """The SSM parameters and the three ways to apply them: kernel, convolution, step."""

    def __init__(
        self,
        H: int,
        d_state: int = 64,
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        channels: int = 1,
        lr_A: float | None = 1e-3,
        lr_dt: float | None = 1e-3,
    ):
        super().__init__()
        if not (int_at_least(2).ok(d_state) and d_state % 2 == 0):
            raise ConfigError.option("d_state", d_state, "expected an even integer >= 2")
        one_of(*INITS).check("init", init)
        positive().check("dt_min", dt_min)
        positive().check("dt_max", dt_max)
        if dt_min > dt_max:
            raise ConfigError.option("dt_min", dt_min, f"expected at most dt_max={dt_max}")
        positive(optional=True).check("lr_A", lr_A)
        positive(optional=True).check("lr_dt", lr_dt)
        N, N2 = d_state, d_state // 2
        n = torch.arange(N2, dtype=torch.float32)
        if init == "lin":
            imag = math.pi * n
        else:
            imag = (N / math.pi) * (N / (2 * n + 1) - 1)
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = optim_hint(nn.Parameter(log_dt), lr=lr_dt, weight_decay=0.0)
        self.log_A_real = optim_hint(
            nn.Parameter(torch.full((H, N2), math.log(0.5))), lr=lr_A, weight_decay=0.0
        )
        self.A_imag = optim_hint(
            nn.Parameter(imag.repeat(H, 1).contiguous()), lr=lr_A, weight_decay=0.0
        )
        C = torch.randn(channels, H, N2, dtype=torch.cfloat)
        self.C = nn.Parameter(torch.view_as_real(C).contiguous())
        self.H, self.N2, self.channels = H, N2, channels

    def _discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dt*A [H, N2], dA [H, N2], C*dB [c, H, N2]), complex64."""
        dt = torch.exp(self.log_dt.float())
        A = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())
        dtA = A * dt[:, None]
        dA = torch.exp(dtA)
        CdB = torch.view_as_complex(self.C.float()) * (dA - 1.0) / A
        return dtA, dA, CdB

    def kernel(self, L: int) -> torch.Tensor:
        """K: [channels, H, L], K[c, h, l] = 2 Re(sum_n CdB[c,h,n] exp(dtA[h,n] l))."""
        dtA, _, CdB = self._discrete()
        pos = torch.arange(L, device=dtA.device, dtype=torch.float32)
        mag = torch.exp(dtA.real[..., None] * pos)  # Vandermonde exp(dtA l), [H, N2, L],
        arg = dtA.imag[..., None] * pos  # in real arithmetic (complex exp is slow on CPU)
        V = torch.cat([mag * torch.cos(arg), mag * torch.sin(arg)], dim=1)  # [H, 2 N2, L]
        Cr = torch.cat([CdB.real, -CdB.imag], dim=-1).transpose(0, 1)  # [H, c, 2 N2]
        return 2.0 * torch.bmm(Cr, V).transpose(0, 1)  # [c, H, L]

    def conv(self, u: torch.Tensor) -> torch.Tensor:
        """u: [B, H, L] (zero at padding) -> SSM output without the D term, by FFT."""
        L = u.shape[-1]
        k = self.kernel(L)
        if self.channels == 2:  # causal lags 0..L-1 and anti-causal lags -1..-(L-1)
            k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))
        else:
            k = k[0]
        k_f = torch.fft.rfft(k, n=2 * L)
        u_f = torch.fft.rfft(u, n=2 * L)
        return torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]

    def default_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.H, self.N2, dtype=torch.cfloat, device=device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One causal step: u_t [B, H], state [B, H, N2] -> (y_t without D, new state)."""
        _, dA, CdB = self._discrete()
        state = dA * state + u_t.float()[..., None].to(state.dtype)
        return 2.0 * (CdB[0] * state).sum(-1).real, state

    def recurrent(self, u: torch.Tensor) -> torch.Tensor:
        """Same as ``conv`` by running the recurrence (forward, and backward if bidirectional).

        The state holds sum_j dA^(t-j) u_j; C*dB is applied on read-out, which is the
        same ZOH system with dB folded into the output."""
        B, H, L = u.shape
        _, dA, CdB = self._discrete()
        s = self.default_state(B, u.device)
        ys = []
        for t in range(L):
            s = dA * s + u[:, :, t, None]
            ys.append(2.0 * (CdB[0] * s).sum(-1).real)
        y = torch.stack(ys, dim=-1)
        if self.channels == 2:  # z_t = sum_{s>t} dA^(s-t-1) u_s
            z = self.default_state(B, u.device)
            back = [torch.zeros(B, H, device=u.device)] * L
            for t in range(L - 2, -1, -1):
                z = dA * z + u[:, :, t + 1, None]
                back[t] = 2.0 * (CdB[1] * z).sum(-1).real
            y = y + torch.stack(back, dim=-1)
        return y


class S4DMixer(Mixer):
    """S4D layer: SSM (conv or recurrent) + D skip -> GELU -> dropout -> GLU/linear output."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr_A: float | None = 1e-3,
        lr_dt: float | None = 1e-3,
        bidirectional: bool = False,
        output: str = "glu",
        dropout: float = 0.0,
        mode: str = "conv",
    ):
        super().__init__(d_model)
        one_of(*MODES).check("mode", mode)
        one_of(*OUTPUTS).check("output", output)
        between(0, 1, hi_open=True).check("dropout", dropout)
        self.causal = not boolean().check("bidirectional", bidirectional)
        self.mode = mode
        self.ssm = S4DKernel(
            d_model, d_state, init, dt_min, dt_max, 2 if bidirectional else 1, lr_A, lr_dt
        )
        self.D = nn.Parameter(torch.randn(d_model))
        self.drop = nn.Dropout(dropout)
        self.glu = output == "glu"
        self.out = nn.Linear(d_model, 2 * d_model if self.glu else d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict]:
        L = x.shape[1]
        mask = valid_mask(lengths, L)
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = (x.float() * mask[..., None]).transpose(1, 2)  # [B, H, L], zero padding
            y = self.ssm.recurrent(u) if self.mode == "recurrent" else self.ssm.conv(u)
            y = (y + self.D.float()[:, None] * u).transpose(1, 2)
        y = self.drop(F.gelu(y)).to(x.dtype)
        y = self.out(y)
        if self.glu:
            y = F.glu(y, dim=-1)
        return y * mask[..., None], {}

    def step(self, x_t: torch.Tensor, state: torch.Tensor | None = None):
        """Streaming (causal only): x_t [B, D] -> (y_t [B, D], state)."""
        if not self.causal:
            raise ConfigError("s4d step(): a bidirectional layer cannot stream; use forward")
        if state is None:
            state = self.ssm.default_state(x_t.shape[0], x_t.device)
        y, state = self.ssm.step(x_t, state)
        y = self.drop(F.gelu(y + self.D.float() * x_t.float())).to(x_t.dtype)
        y = self.out(y)
        return (F.glu(y, dim=-1) if self.glu else y), state

    def extra_repr(self) -> str:
        return f"mode={self.mode}, causal={self.causal}"


def analytic_flops(
    B: int, L: int, H: int, d_state: int, bidirectional: bool, glu: bool = True
) -> dict[str, Any]:
    """Forward FLOPs of one S4DMixer call in conv mode (the convention of baselines.flops)."""
    from baselines.flops import fft_flops

    c = 2 if bidirectional else 1
    vandermonde = 4 * c * H * (d_state // 2) * L
    ffts = fft_flops(2 * L, H, True) + 2 * fft_flops(2 * L, B * H, True)
    linear = 2 * B * L * H * (2 * H if glu else H)
    total = vandermonde + ffts + linear
    return {"vandermonde": vandermonde, "fft": ffts, "linear": linear, "total": total}
