"""The backbone's dense parts in one C++ call per block, for inference on the CPU.

At batch 1 a sequence's embedding, norms, residual adds, GLU feed-forward, pooling and head
are ~30 small torch ops per block, each paying Python and dispatch overhead: most of a
trained model's time once its suRNN layers skip most updates. ``use_fused(model)`` runs them
in the compiled extension instead (``surnn/ops/csrc/dense.cpp``): one call for the
embedding and the first norm, one per block after its mixer (residual, feed-forward, the
next norm), one for pooling and a linear head; the mixers run as always:

    from surnn.harness.fused import use_fused
    use_fused(model)            # model.encoder.dense = "fused"
    model.eval()
    with torch.no_grad():
        logits, aux = model(batch)

Only inference passes run fused: a pass in training mode, with autograd on, on another
device or dtype, or without the extension (no compiler) runs the eager modules, so the
setting never changes what a training step computes. Outputs equal the eager model's to
float rounding, not bit for bit (the matrix products are MKL's, as in nn.Linear but with
the weights transposed once; layer norm and GELU are the extension's own loops), which is
why the harness's training and evaluation keep the eager path and committed results stay
reproducible; ``scripts/bench_checkpoint.py`` times both and records how far apart their
outputs are. The products call the BLAS ``sgemm`` that torch links, found at the first
call and checked on a known product; ``SURNN_DENSE_ATEN_MM=1`` (read once per process)
sends them through ``torch.mm`` instead.
"""

from __future__ import annotations

import warnings
import weakref
from typing import NamedTuple

import torch
from torch import nn

from surnn.ops import compiled_build
from surnn.utils import on_registration

DENSE_IMPLS = ("eager", "fused")
_POOL_KINDS = {"mean": 0, "max": 1, "last": 2}


def use_fused(model: nn.Module, on: bool = True) -> nn.Module:
    """Run ``model``'s dense parts fused in its inference passes (``on=False``: eager
    again). Returns the model. Warns, and keeps the eager path, when the extension cannot
    be built here."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "dense"):
        raise TypeError(
            "use_fused: expected a harness model (surnn.harness.backbone.Model), got "
            f"{type(model).__name__}"
        )
    if on and _ext() is None:
        warnings.warn(
            "use_fused: the compiled extension is unavailable here (see surnn.ops."
            "compiled_build); the dense parts run eagerly",
            RuntimeWarning,
            stacklevel=2,
        )
    encoder.dense = "fused" if on else "eager"
    _PLANS.pop(encoder, None)
    return model


def _ext():
    """The extension, or None where it cannot be built (``compiled_build.load`` keeps it)."""
    return compiled_build.load()


def ops_for(encoder: nn.Module, x: torch.Tensor):
    """The extension when this pass of ``encoder`` may run fused (it asked for it; eval
    mode, no autograd, a CPU input; the weights' dtype, float32, is checked by ``plan``),
    else None: the eager modules run."""
    if encoder.dense != "fused" or encoder.training or torch.is_grad_enabled():
        return None
    return _ext() if x.device.type == "cpu" else None


class Plan(NamedTuple):
    """What a fused pass of an encoder calls, its arguments gathered once."""

    float32: bool  # the weights are float32 (else the pass runs eagerly)
    table: torch.Tensor | None  # the embedding table when the input is one (no positions)
    first: tuple  # (weight, bias, eps) of the first norm (block 0's; the final one without blocks)
    blocks: tuple  # ((block, its dense_tail arguments after (x, y)), ...)
    made: tuple  # (weight, version, storage) of the weights watched


# encoder -> its Plan; cleared when anything is registered on any module (a parameter or
# submodule replaced), left with the encoder.
_PLANS: weakref.WeakKeyDictionary[nn.Module, Plan] = weakref.WeakKeyDictionary()


def _forget(*_):
    _PLANS.clear()


def plan(encoder: nn.Module) -> Plan:
    """``encoder``'s Plan: per block its second norm, its feed-forward's projections
    transposed (contiguous: the layout MKL multiplies fastest at batch 1) with their biases,
    and the norm that follows it (the next block's first, or the final one). Made once,
    and again when a transposed weight or the first norm's changes (its version or storage:
    an optimizer step, a checkpoint loaded into it, a move or a dtype change) or anything is
    registered on a module. An edit through ``weight.data`` bumps no version: call
    ``use_fused(model)`` again after one (it forgets the plans)."""
    hit = _PLANS.get(encoder)
    if hit is not None and all(w._version == v and w.data_ptr() == p for w, v, p in hit.made):
        return hit
    on_registration(_forget)
    norms = [(n.weight, n.bias, n.eps) for n in [b.norm1 for b in encoder.blocks] + [encoder.norm]]
    # Watched: the first norm's weight (a move or a dtype change replaces every tensor's
    # storage, with or without feed-forwards) and each weight copied transposed.
    first = norms[0][0]
    blocks, made = [], [(first, first._version, first.data_ptr())]
    for i, blk in enumerate(encoder.blocks):
        ffn = blk.ffn
        if ffn is None:
            blocks.append((blk, (None, None, 0.0, None, None, None, None, *norms[i + 1])))
            continue
        n, p_in, p_out = blk.norm2, ffn.proj_in, ffn.proj_out
        made += [(w, w._version, w.data_ptr()) for w in (p_in.weight, p_out.weight)]
        wt_in, wt_out = (w.detach().t().contiguous() for w in (p_in.weight, p_out.weight))
        args = (n.weight, n.bias, n.eps, wt_in, p_in.bias, wt_out, p_out.bias, *norms[i + 1])
        blocks.append((blk, args))
    embed = encoder.embed
    table = embed.weight if isinstance(embed, nn.Embedding) and encoder.pos.kind == "none" else None
    f32 = all(p.dtype == torch.float32 for p in encoder.parameters())
    hit = _PLANS[encoder] = Plan(f32, table, norms[0], tuple(blocks), tuple(made))
    return hit


def pool(ext, h: torch.Tensor, lengths: torch.Tensor, kind: str, head: nn.Module):
    """``head`` applied to ``h`` pooled over the valid positions: in one call when the
    head is a linear layer."""
    if isinstance(head, nn.Linear):
        return ext.dense_pool(h, lengths, _POOL_KINDS[kind], head.weight, head.bias)
    return head(ext.dense_pool(h, lengths, _POOL_KINDS[kind], None, None))
