"""Multi-head self-attention as a sequence mixer (the Transformer baseline).

The backbone already wraps every mixer in a pre-norm residual block with a GLU feed-forward
(``surnn.harness.backbone.Block``), so with this mixer the backbone is a pre-norm Transformer
encoder. Attention runs through ``torch.nn.functional.scaled_dot_product_attention``
(flash / memory-efficient kernels on GPU; a batch without padding and without a causal
mask passes no mask, so the flash kernel applies).

Padding: keys at padded positions are masked out (a [B, 1, 1, L] mask, broadcast), so valid
outputs do not depend on right padding; padded query rows still see at least one valid key
(lengths are clamped to >= 1), so no row is all -inf and no NaN appears; their outputs are
then set to zero. A causal layer needs no padding mask: with right padding, a valid query
only sees earlier, valid keys, so it uses the causal kernel alone (no [L, L] mask in memory).

Positions: the standard setup adds them once to the input embedding, which the backbone
does (``model.pos_emb: sinusoidal | learned``; the default transformer config). The
mixer's own ``positions`` option instead adds a position signal to the attention input of
every layer (the per-layer "timing signal" of the Universal Transformer), to the normed
block input and never to the residual stream, so it does not accumulate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import baselines.flops  # noqa: F401  (CPU attention FLOP formula)
from surnn.checks import between, boolean, int_at_least, one_of
from surnn.errors import ConfigError
from surnn.harness.mixer import Mixer
from surnn.harness.positions import KINDS as POSITIONS
from surnn.harness.positions import Positions
from surnn.utils import valid_mask


class AttentionMixer(Mixer):
    """Multi-head self-attention: qkv projection (width ``qkv_dim``, default d_model) ->
    SDPA -> output projection back to d_model."""

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        qkv_dim: int | None = None,
        causal: bool | None = False,
        positions: str = "sinusoidal",
        attn_dropout: float = 0.0,
        max_len: int | None = None,
    ):
        super().__init__(d_model)
        int_at_least(1).check("n_heads", n_heads)
        dq = int_at_least(1, optional=True).check("qkv_dim", qkv_dim) or d_model
        if dq % n_heads:
            raise ConfigError.option(
                "n_heads",
                n_heads,
                f"expected a divisor of qkv_dim={dq} (null means d_model), the width the heads "
                "share",
            )
        boolean(optional=True).check("causal", causal)
        between(0, 1, hi_open=True).check("attn_dropout", attn_dropout)
        one_of(*POSITIONS).check("positions", positions)
        # None (the config's null): the backbone passes True for language modelling
        self.causal, self.n_heads, self.qkv_dim = bool(causal), n_heads, dq
        self.attn_dropout = float(attn_dropout)
        self.pos = Positions(positions, d_model, max_len, "positions")
        self.qkv = nn.Linear(d_model, 3 * dq)
        self.proj = nn.Linear(dq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, dict]:
        B, L, _ = x.shape
        h, dh = self.n_heads, self.qkv_dim // self.n_heads
        q, k, v = self.qkv(self.pos(x)).view(B, L, 3, h, dh).permute(2, 0, 3, 1, 4)
        keep = valid_mask(lengths, L)  # [B, L]
        padded = not bool(keep.all())
        mask = None
        if padded and not self.causal:  # a causal query at t < length never sees padding
            key_ok = valid_mask(lengths.clamp(min=1), L)
            mask = key_ok[:, None, None, :]  # [B, 1, 1, L], broadcast over heads and queries
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=self.causal,
        )
        y = self.proj(y.transpose(1, 2).reshape(B, L, self.qkv_dim))
        if padded:
            y = y * keep[..., None].to(y.dtype)
        return y, {}


def analytic_flops(B: int, L: int, d_model: int, qkv_dim: int | None = None) -> int:
    """Forward FLOPs of one AttentionMixer call: projections + QK^T + AV (full, unmasked)."""
    dq = qkv_dim or d_model
    proj = 2 * B * L * d_model * 3 * dq + 2 * B * L * dq * d_model
    attn = 2 * (2 * B * L * L * dq)
    return proj + attn
