"""FLOP formulas for the ops FlopCounterMode misses in the baselines.

``torch.utils.flop_counter.FlopCounterMode`` (torch 2.x) counts matmuls, convolutions and
the CUDA attention kernels, but not:

- FFTs (``aten._fft_r2c`` / ``_fft_c2r`` / ``_fft_c2c``), used by the S4D convolution;
- the CPU attention kernel ``aten._scaled_dot_product_flash_attention_for_cpu``;
- fused RNN kernels: ``aten.mkldnn_rnn_layer`` (nn.LSTM on CPU) and ``aten._cudnn_rnn``
  (nn.LSTM / nn.GRU on CUDA). nn.GRU on CPU decomposes into counted matmuls.

Conventions (those of FlopCounterMode): a multiply-add is 2 FLOPs; pointwise work (gate
nonlinearities, softmax, the spectral product of an FFT convolution) is not counted. An
n-point FFT is counted with the radix-2 estimate ``5 n log2 n`` real FLOPs for a complex
transform and half of it, ``2.5 n log2 n``, for a real-input or real-output transform.
Attention counts both matmuls in full (a causal mask is not halved, as in torch's own
formulas for the CUDA kernels). Importing this module registers the formulas once; a
formula already registered by someone else is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import (
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

aten = torch.ops.aten


def fft_flops(n: int, batch: int, real: bool) -> int:
    """FLOPs of ``batch`` n-point FFTs (``real``: a real-input or real-output transform)."""
    if n <= 1:
        return 0
    per = 5.0 * n * math.log2(n)
    return int(round(batch * (per / 2 if real else per)))


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _register(op, formula, get_raw: bool = False) -> None:
    if op not in flop_registry:
        register_flop_formula(op, get_raw=get_raw)(formula)


def _fft_r2c_flop(x_shape, dim, normalization, onesided, out_shape=None, **kw) -> int:
    n = _prod(x_shape[d] for d in dim)
    return fft_flops(n, _prod(x_shape) // max(n, 1), real=True)


def _fft_c2r_flop(x_shape, dim, normalization, last_dim_size, out_shape=None, **kw) -> int:
    n = _prod(out_shape[d] for d in dim)
    return fft_flops(n, _prod(out_shape) // max(n, 1), real=True)


def _fft_c2c_flop(x_shape, dim, normalization, forward, out_shape=None, **kw) -> int:
    n = _prod(x_shape[d] for d in dim)
    return fft_flops(n, _prod(x_shape) // max(n, 1), real=False)


def _sdpa_cpu_flop(q, k, v, *args, out_shape=None, **kw) -> int:
    return sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward_flop(grad_out, q, k, v, *args, out_shape=None, **kw) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


def _mkldnn_rnn_layer_flop(x, w_ih, w_hh, *args, out_shape=None, **kw) -> int:
    """One direction of one layer over every (step, sequence): 2 * tokens * |W_ih + W_hh|."""
    tokens = x[0] * x[1]
    return 2 * tokens * (_prod(w_ih) + _prod(w_hh))


def _cudnn_rnn_flop(
    x,
    weights,
    weight_stride0,
    weight_buf,
    hx,
    cx,
    mode,
    hidden_size,
    proj_size,
    num_layers,
    batch_first,
    dropout,
    train,
    bidirectional,
    batch_sizes,
    *args,
    out_shape=None,
    **kw,
) -> int:
    """Every layer and direction reads every token: 2 * tokens * (sum of weight matrices).

    Packed input is ``[sum(batch_sizes), D]`` (tokens = rows); padded input ``[B, T, D]``.
    """
    tokens = x[0] if len(x) == 2 else x[0] * x[1]
    mats = sum(_prod(s) for s in weights if len(s) == 2)
    return 2 * tokens * mats


_register(aten._fft_r2c, _fft_r2c_flop)
_register(aten._fft_c2r, _fft_c2r_flop)
_register(aten._fft_c2c, _fft_c2c_flop)
_register(aten._scaled_dot_product_flash_attention_for_cpu, _sdpa_cpu_flop)
_register(aten._scaled_dot_product_flash_attention_for_cpu_backward, _sdpa_cpu_backward_flop)
_register(aten.mkldnn_rnn_layer, _mkldnn_rnn_layer_flop)
_register(aten._cudnn_rnn, _cudnn_rnn_flop)
