"""Encoder -> N pre-norm residual blocks (mixer, GLU feed-forward) -> head.

Tasks know nothing of models and mixers know nothing of tasks: the backbone reads the
task's input description (tokens or values, classes, dual) and its objective
(``surnn.harness.objectives``) and builds any registered mixer by name:

- ``classify``: pooling over valid positions (``model.pool``) -> linear head;
- ``tokens``, ``lm``: the head at every position (no pooling); ``lm`` needs causal layers
  (a non-causal mixer is a ConfigError; the transformer's ``causal: null`` means causal
  exactly for language modelling);
- ``regress``: the head on the last valid position.

Retrieval (``dual``) encodes both documents with the same backbone and classifies
``[a, b, a*b, a-b]`` with a small MLP. ``model=hybrid`` mixes mixer kinds by layer
(``model.options.layers: [surnn, s4d]``, repeated to fill ``n_layers``; each kind's options
under ``model.options.<kind>``). With ``state`` (truncated BPTT over windows of a stream)
every mixer must carry its recurrent state (``Mixer.stateful``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from surnn.errors import ConfigError
from surnn.harness import fused
from surnn.harness.fused import ops_for
from surnn.harness.objectives import build_objective
from surnn.harness.positions import Positions
from surnn.harness.registry import MIXERS
from surnn.utils import valid_mask

log = logging.getLogger(__name__)

HYBRID = "hybrid"


class GLUFeedForward(nn.Module):
    def __init__(self, d_model: int, mult: float = 2.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(d_model * mult)
        self.proj_in = nn.Linear(d_model, 2 * hidden)
        self.proj_out = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.drop(a * F.gelu(b)))


class Block(nn.Module):
    def __init__(self, mixer: nn.Module, d_model: int, ffn_mult: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = GLUFeedForward(d_model, ffn_mult, dropout) if ffn_mult > 0 else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x, lengths, state=None, carry: bool = False):
        if carry:
            y, aux, state = self.mixer.forward_state(self.norm1(x), lengths, state)
        else:
            y, aux = self.mixer(self.norm1(x), lengths)
        x = x + self.drop(y)
        if self.ffn is not None:
            x = x + self.drop(self.ffn(self.norm2(x)))
        return x, aux, state


class Hybrid:
    """``model=hybrid``: not one mixer but a plan of mixers by layer, which the backbone
    builds (``layer_plan``); its registry entry makes ``model=hybrid`` a valid choice."""

    def __init__(self, *args, **kwargs):
        raise ConfigError("model=hybrid is a stack of mixers built by the backbone, not a mixer")


def layer_plan(
    mixer: str, mixer_options: dict[str, Any], n_layers: int, idle: bool = False
) -> list[tuple[str, dict[str, Any], str]]:
    """(mixer kind, its options, where they sit in the config) per layer. One kind:
    n_layers times the same, from ``model.options``. ``hybrid``: ``options.layers`` (a list
    of kinds) repeated to fill n_layers, rounded up to whole repeats (``trainer=smoke``'s
    one layer gives one of each kind), each kind with the options under
    ``model.options.<kind>``. ``idle``: instead, the hybrid's option blocks of kinds not in
    its layers (unused; ``check_config`` builds them once to check their options)."""
    if MIXERS.canonical(mixer) != HYBRID:
        return [] if idle else [(mixer, dict(mixer_options), "model.options.")] * n_layers
    opts = dict(mixer_options)
    kinds = opts.pop("layers", None)
    if not kinds or isinstance(kinds, str):
        raise ConfigError(
            "model=hybrid needs model.options.layers, a list of mixer kinds by layer, e.g. "
            "[surnn, s4d]"
        )
    kinds = [MIXERS.canonical(str(k)) for k in kinds]
    if HYBRID in kinds:
        raise ConfigError("model.options.layers: a hybrid cannot contain hybrid; list mixers")
    repeats = -(-n_layers // len(kinds))
    alias = {MIXERS.canonical(k): k for k in opts if k in MIXERS.names(aliases=True)}
    foreign = sorted(k for k in opts if k not in MIXERS.names(aliases=True))
    if foreign:
        raise ConfigError(
            f"model=hybrid: unknown option {', '.join(foreign)}; model.options takes `layers` "
            f"and one options block per mixer kind ({', '.join(MIXERS.names())})"
        )
    per_kind = {c: dict(opts[a] or {}) for c, a in alias.items()}
    where = {k: f"model.options.{alias.get(k, k)}." for k in per_kind.keys() | set(kinds)}
    if idle:  # the option blocks of kinds the stack does not use
        return [(k, o, where[k]) for k, o in per_kind.items() if k not in kinds]
    if n_layers % len(kinds):
        log.warning(
            "model=hybrid: model.n_layers=%d is not a multiple of the %d kinds in "
            "model.options.layers (%s): building %d layers (the list %d times)",
            n_layers,
            len(kinds),
            ", ".join(kinds),
            repeats * len(kinds),
            repeats,
        )
    return [(k, per_kind.get(k, {}), where[k]) for k in kinds] * repeats


def build_mixer(kind: str, options: dict[str, Any], where: str, d_model: int, max_len: int, causal):
    """The mixer, built from its options (the mixer checks them; a bad one is named by its
    path in the config, ``where``)."""
    cls = MIXERS.get(kind)
    params = inspect.signature(cls).parameters
    if "max_len" in params:
        options = {"max_len": max_len, **options}
    if causal and "causal" in params and options.get("causal") is None:
        options = {**options, "causal": True}
    try:
        return cls(d_model, **options)
    except ConfigError as e:
        raise e.within(where) from None
    except TypeError as e:
        raise ConfigError(
            f"model={kind}: bad mixer option ({e}); see configs/model/{kind}.yaml "
            "for the options it takes"
        ) from e


def pool(h: torch.Tensor, lengths: torch.Tensor, kind: str) -> torch.Tensor:
    """[B, L, D] -> [B, D] over the valid positions: mean, max or last."""
    mask = valid_mask(lengths, h.shape[1])
    if kind == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(h.dtype)
    if kind == "max":
        return h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    idx = (lengths - 1).clamp(min=0)
    return h[torch.arange(h.shape[0], device=h.device), idx]


class Encoder(nn.Module):
    """Shared sequence encoder: embedding/linear input -> blocks -> norm (per position)."""

    def __init__(
        self,
        input_kind: str,
        vocab_size: int | None,
        input_dim: int | None,
        mixer: str,
        mixer_options: dict[str, Any],
        d_model: int,
        n_layers: int,
        ffn_mult: float,
        dropout: float,
        pool: Literal["mean", "last", "max"],
        max_len: int,
        pos_emb: str = "none",
        causal: bool = False,
    ):
        super().__init__()
        if input_kind == "tokens":
            self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        else:
            self.embed = nn.Linear(input_dim, d_model)
        plan = layer_plan(mixer, mixer_options, n_layers)
        self.kinds = [MIXERS.canonical(k) for k, _, _ in plan]
        blocks = [
            Block(build_mixer(k, o, w, d_model, max_len, causal), d_model, ffn_mult, dropout)
            for k, o, w in plan
        ]
        if causal:
            for i, (blk, kind) in enumerate(zip(blocks, self.kinds)):
                if not getattr(blk.mixer, "causal", False):
                    raise ConfigError(
                        f"language modelling needs causal layers, but layer {i} (model={kind}) "
                        f"is not causal: {_causal_fix(kind)}"
                    )
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(d_model)
        self.pos = Positions(pos_emb, d_model, max_len, "model.pos_emb")
        self.pool = pool
        self.drop = nn.Dropout(dropout)
        #: "fused": inference passes run the dense parts in the extension (``use_fused``).
        self.dense = "eager"

    @property
    def stateful(self) -> bool:
        """Every mixer can carry its state across windows of a stream."""
        return all(getattr(b.mixer, "stateful", False) for b in self.blocks)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, states: list | None = None, carry=False
    ) -> tuple[torch.Tensor, dict, list | None]:
        """(h [B, L, D] after the final norm, aux, new states when ``carry``)."""
        ext = ops_for(self, x)
        if ext is not None:
            p = fused.plan(self)
            if p.float32:
                return self._forward_fused(ext, p, x, lengths, states, carry)
        h = self.drop(self.pos(self.embed(x)))
        aux: dict[str, Any] = {}
        aux_loss = None
        new_states = [] if carry else None
        for i, blk in enumerate(self.blocks):
            s = states[i] if (carry and states is not None) else None
            h, a, s = blk(h, lengths, s, carry)
            if carry:
                new_states.append(s)
            aux_loss = _gather(aux, i, a, aux_loss)
        return self.norm(h), _ended(aux, aux_loss), new_states

    def _forward_fused(self, ext, p, x, lengths, states, carry):
        """``forward`` with the dense parts in the extension (``surnn.harness.fused``,
        following its plan ``p``): the same modules, in eval mode (no dropout); each call
        ends with the next norm."""
        if p.table is not None:
            h, u = ext.dense_embed(x, p.table, *p.first)
        else:
            h = self.pos(self.embed(x)).contiguous()
            u = ext.dense_norm(h, *p.first)
        aux: dict[str, Any] = {}
        aux_loss = None
        new_states = [] if carry else None
        for i, (blk, args) in enumerate(p.blocks):
            if carry:
                s = states[i] if states is not None else None
                y, a, s = blk.mixer.forward_state(u, lengths, s)
                new_states.append(s)
            else:
                y, a = blk.mixer(u, lengths)
            h, u = ext.dense_tail(h, y.contiguous(), *args)
            aux_loss = _gather(aux, i, a, aux_loss)
        return u, _ended(aux, aux_loss), new_states


def _gather(aux: dict, i: int, a: dict, aux_loss):
    """Layer i's aux into the model's (its metrics as ``layer{i}/<name>``); returns the
    auxiliary loss so far, ``aux_loss`` plus the layer's."""
    for k, v in a.items():
        if k == "aux_loss":
            aux_loss = v if aux_loss is None else aux_loss + v
        else:
            aux[f"layer{i}/{k}"] = v
    return aux_loss


def _ended(aux: dict, aux_loss) -> dict:
    """``aux`` with the layers' summed auxiliary loss last (when there is one)."""
    if aux_loss is not None:
        aux["aux_loss"] = aux_loss
    return aux


def _causal_fix(kind: str) -> str:
    return {
        "transformer": "set model.options.causal=true (or null)",
        "gru": "set model.options.bidirectional=false",
        "lstm": "set model.options.bidirectional=false",
        "s4d": "set model.options.bidirectional=false",
    }.get(kind, "choose a causal mixer")


class Model(nn.Module):
    """A task's model around registered mixers: encoder + the head of the task's objective."""

    def __init__(
        self,
        task,
        mixer: str,
        mixer_options: dict[str, Any] | None = None,
        d_model: int = 128,
        n_layers: int = 4,
        ffn_mult: float = 2.0,
        dropout: float = 0.1,
        pool: Literal["mean", "last", "max"] = "mean",
        head_hidden: int | None = None,
        pos_emb: str = "none",
    ):
        super().__init__()
        self.mixer_name = mixer
        self.dual = bool(task.dual)
        self.objective = build_objective(task)
        if self.dual and self.objective.name != "classify":
            raise ConfigError(
                f"task={task.name}: a dual task must classify (objective={self.objective.name})"
            )
        self.encoder = Encoder(
            task.input_kind,
            task.vocab_size,
            task.input_dim,
            mixer,
            dict(mixer_options or {}),
            d_model,
            n_layers,
            ffn_mult,
            dropout,
            pool,
            task.max_len,
            pos_emb,
            causal=self.objective.name == "lm",
        )
        if self.dual:
            hidden = head_hidden or d_model
            self.head = nn.Sequential(
                nn.Linear(4 * d_model, hidden), nn.GELU(), nn.Linear(hidden, task.n_classes)
            )
        else:
            self.head = self.objective.head(d_model)

    @property
    def layer_kinds(self) -> list[str]:
        return list(self.encoder.kinds)

    def gate_stats(self, T: int, windows: dict[str, tuple[int, int]]) -> dict[str, int]:
        """``layer{i}/<stat>`` for every mixer with time-only gates (``SuRNNMixer``):
        how many neurons hold across a memory task's delay (``surnn.gates.hold_stats``)."""
        out = {}
        for i, blk in enumerate(self.encoder.blocks):
            if hasattr(blk.mixer, "gate_stats"):
                out.update(
                    {f"layer{i}/{k}": v for k, v in blk.mixer.gate_stats(T, windows).items()}
                )
        return out

    def forward(
        self, batch: dict[str, torch.Tensor], state: list | None = None, carry: bool = False
    ):
        """(out, aux), or (out, aux, new state) with ``carry`` (truncated BPTT: ``state``
        from the previous window of the same rows, None for a stream's first window).

        ``out`` is what the objective scores: logits ``[B, C]`` (classify), ``[B, L, C]``
        (tokens), predictions ``[B]`` (regress), or the LM's per-target ``nll``/``pred``.
        aux holds 0-d tensors, ``aux_loss`` (the sum of the mixers' auxiliary losses, to
        add to the task loss; absent when there is none) and per-layer metrics
        ``layer{i}/update_rate`` etc. (a dual task averages its two encodings)."""
        if carry and not self.encoder.stateful:
            kinds = sorted(
                {
                    k
                    for k, b in zip(self.layer_kinds, self.encoder.blocks)
                    if not getattr(b.mixer, "stateful", False)
                }
            )
            raise ConfigError(
                f"model={self.mixer_name}: layer kind(s) {', '.join(kinds)} cannot carry a "
                "state across windows; set task.options.carry_state=false"
            )
        lengths = batch["lengths"]
        h, aux, new_state = self.encoder(batch["x"], lengths, state, carry)
        obj = self.objective
        if obj.per_position:
            out = obj.outputs(self.head, h, batch.get("y"))
        elif obj.name == "regress":
            out = obj.outputs(self.head, pool(h, lengths, "last"), None)
        elif not self.dual:
            ext = ops_for(self.encoder, h)
            if ext is not None and h.dtype == torch.float32:
                out = fused.pool(ext, h, lengths, self.encoder.pool, self.head)
            else:
                out = self.head(pool(h, lengths, self.encoder.pool))
        else:
            a = pool(h, lengths, self.encoder.pool)
            h2, aux2, _ = self.encoder(batch["x2"], batch["lengths2"])
            b = pool(h2, batch["lengths2"], self.encoder.pool)
            for k, v in aux2.items():
                if k not in aux:
                    aux[k] = v
                elif k == "aux_loss":
                    aux[k] = aux[k] + v
                else:
                    aux[k] = (aux[k] + v) / 2
            out = self.head(torch.cat([a, b, a * b, a - b], dim=-1))
        return (out, aux, new_state) if carry else (out, aux)
