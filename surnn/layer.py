"""SelectiveUpdateGRU: a drop-in for torch.nn.GRU whose neurons update only when their gate is open."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from surnn.checks import at_least, between, one_of
from surnn.errors import ConfigError
from surnn.gates import build_gate, forced_open
from surnn.ops import IMPLS, compiled, resolve_impl, step_tables, su_gru, update_rates
from surnn.ops.compiled import plain_call
from surnn.utils import closes_nothing, valid_mask


class LastCall(NamedTuple):
    """What a ``SelectiveUpdateGRU`` call leaves, per layer: its gate, the gate's mean over
    the valid positions, the fraction of updates computed (detached 0-d tensors), and the
    rate penalty (None without one)."""

    gate: list[torch.Tensor]
    update_rate: list[torch.Tensor]
    active_rate: list[torch.Tensor]
    aux_loss: torch.Tensor | None


class SelectiveUpdateGRU(nn.Module):
    """A GRU whose neurons update only when their gate is open.

    Constructor, weight names and layout follow ``torch.nn.GRU`` (unidirectional), so
    ``load_state_dict`` from an ``nn.GRU`` works (``strict=False``: the gates add their own
    parameters). Input ``[B, T, D]`` with ``batch_first=True`` else ``[T, B, D]``, or a
    ``PackedSequence``; returns ``(output, h_n)`` with ``h_n: [num_layers, B, H]`` taken at
    each sequence's last valid step when ``lengths`` is given (padding steps are closed).

    Each layer k computes, at every step t, the GRU update f of the neurons its gate opens
    and carries the others' state: h_t = h_{t-1} + g_t * (f(x_t, h_{t-1}) - h_{t-1}), with
    g = gates[k](T) in {0, 1} ([T, H], or [B, T, H] for per-sample gates; the kernels of
    ``surnn.ops.su_gru`` compute f only where the gate is active).

    ``gate`` is a gate config (``surnn.gates.build_gate``) plus the layer's rate options:

    - ``target_rate``: the update rate each layer should reach (e.g. 0.17, the harness's
      presets: the paper reports 83% of updates skipped on sMNIST as an outcome of its
      training, not as a target); None: whatever the gate learns.
    - ``rate_control`` (with a target): ``bias`` (default) shifts each layer's gate by one
      shared offset (the gate's ``rate_offset`` buffer, added to every neuron's
      pre-activation) so that the layer's rate over the valid positions of the batch equals
      the target: in every training forward (``self.training`` and autograd on) the offset
      is solved for by bisection on the batch before the gate is applied, so the task's
      gradient shapes the rhythms (which neurons open when) while the layer's rate stays at
      the target whatever it does to the gate's biases. The offset of the last training
      batch is kept (saved with the weights) and used in eval. ``none``: no control.
    - ``rate_penalty``: adds ``rate_penalty * (rate - target_rate)^2`` per layer to
      ``last_aux_loss`` (a loss on the gate parameters; alone it trades the rate against the
      task loss and does not land on the target, see tests/surnn/test_layer.py).

    After a call, ``last`` (a ``LastCall``; also read as ``last_gate``, ``last_update_rate``,
    ``last_active_rate``, ``last_aux_loss``) holds each layer's gate, its mean over the valid
    positions and the fraction of updates actually computed,
    as detached 0-d tensors (no host sync: read them with ``float()`` when logging).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        gate: dict[str, Any] | None = None,
        impl: str = "auto",
    ):
        super().__init__()
        if bidirectional:
            raise ConfigError(
                "SelectiveUpdateGRU bidirectional=True: the layer is causal (as in the paper); "
                "use bidirectional=False"
            )
        one_of(*IMPLS).check("impl", impl)
        if not torch.cuda.is_available():  # load (or build once) the CPU kernel impl runs
            resolve_impl(impl, torch.device("cpu"))  # now, not in a (timed) first forward
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.impl = float(dropout), impl
        gate = dict(gate or {})
        self.target_rate = gate.pop("target_rate", None)
        between(0, 1, optional=True).check("gate.target_rate", self.target_rate)
        rate_penalty = gate.pop("rate_penalty", None)
        self.rate_penalty = float(
            at_least(0, optional=True).check("gate.rate_penalty", rate_penalty) or 0
        )
        self.rate_control = gate.pop("rate_control", None) or "bias"
        if self.rate_control not in ("bias", "none"):
            raise ConfigError.option(
                "gate.rate_control",
                self.rate_control,
                "expected bias (steer each layer's rate to target_rate) or none",
            )
        H = hidden_size
        for k in range(num_layers):
            d = input_size if k == 0 else H
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(3 * H, d)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(3 * H, H)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(3 * H)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(3 * H)))
        try:
            self.gates = nn.ModuleList(
                build_gate(H, input_size if k == 0 else H, gate) for k in range(num_layers)
            )
        except ConfigError as e:  # the gate names its option; here it sits under gate.
            raise e.within("gate.") from None
        self.controlled = self.target_rate is not None and self.rate_control == "bias"
        if self.controlled:
            for g in self.gates:
                g.enable_rate_control()
        self.reset_parameters()
        self.last = LastCall([], [], [], None)
        # each layer's parameter names, in layer_weights' order (None: no biases)
        self._names = [
            (f"weight_ih_l{k}", f"weight_hh_l{k}")
            + ((f"bias_ih_l{k}", f"bias_hh_l{k}") if bias else ("", ""))
            for k in range(num_layers)
        ]
        self._kept = None  # (served gate views, their LastCall): _served_last's

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith(("weight_", "bias_")):
                nn.init.uniform_(p, -std, std)

    @property
    def last_gate(self) -> list[torch.Tensor]:
        return self.last.gate

    @property
    def last_update_rate(self) -> list[torch.Tensor]:
        return self.last.update_rate

    @property
    def last_active_rate(self) -> list[torch.Tensor]:
        return self.last.active_rate

    @property
    def last_aux_loss(self) -> torch.Tensor | None:
        return self.last.aux_loss

    def layer_weights(self, k: int):
        """Layer k's (W_ih [3H, D], W_hh [3H, H], b_ih [3H] or None, b_hh [3H] or None)."""
        w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")

    def forward(
        self,
        input: torch.Tensor | PackedSequence,
        hx: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        t0: int = 0,
    ) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        """``t0``: the time of the first step for the gates (the steps already read when a
        long stream is fed in windows with the state carried over; 0 otherwise)."""
        if not t0 and not torch.is_grad_enabled():
            res = self._infer(input, hx, lengths)
            if res is not None:
                return res
        packed = isinstance(input, PackedSequence)
        if packed:  # padded, in the caller's batch order (as hx and h_n are)
            x, lengths = pad_packed_sequence(input, batch_first=True)
        else:
            x = input if self.batch_first else input.transpose(0, 1)  # [B, T, D]
        T = x.shape[1]
        steer = self.controlled and self.training and torch.is_grad_enabled() and not forced_open()
        gates, rates, active_rates, h_n, aux_loss = [], [], [], [], None
        for k, gate in enumerate(self.gates):
            if steer:
                _steer(gate, T, x, lengths, float(self.target_rate), t0=t0)
            g, active = gate(T, x, device=x.device, dtype=x.dtype, t0=t0)  # [T, H] or [B, T, H]
            rate, active_rate = update_rates(g, active, lengths)
            gates.append(g.detach())
            rates.append(rate.detach())
            active_rates.append(active_rate)
            if self.target_rate is not None and self.rate_penalty > 0 and self.training:
                penalty = self.rate_penalty * (rate - float(self.target_rate)) ** 2
                aux_loss = penalty if aux_loss is None else aux_loss + penalty
            h0 = None if hx is None else hx[k]  # None: zeros
            x, h = su_gru(x, h0, *self.layer_weights(k), g, active, lengths, impl=self.impl)
            h_n.append(h)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, True)
        self.last = LastCall(gates, rates, active_rates, aux_loss)  # one attribute: ~3 us each
        h_n = h_n[0].unsqueeze(0) if len(h_n) == 1 else torch.stack(h_n)
        if packed:  # packed as the input was: its length order and batch permutation
            return _pack_like(input, x, lengths), h_n
        return (x if self.batch_first else x.transpose(0, 1)), h_n

    def _infer(self, x, hx, lengths):
        """Inference of an unpadded batch (``lengths`` None or closing no step) with
        time-only gates on the compiled CPU kernel: each gate served from its table with its
        step plan (``compiled.step_plan``, made once per table view), one C++ call per
        layer, and the previous ``LastCall`` kept while every gate serves the same views.
        None where the general path runs: another input, device, dtype or kernel, a dispatch
        mode (FlopCounterMode) or a torch.compile trace, per-sample gates, weights that are
        not the layer's own parameters (a parametrization), dropout or a rate penalty in
        training. Same outputs and ``last`` as the general path with less Python around the
        kernel, which at batch 1 costs more than a short sequence's sweep (22 us a call when
        warm; 0.15-0.2 ms right after a long sweep has left it cold)."""
        if type(x) is not torch.Tensor or x.dim() != 3 or 0 in x.shape[:2]:
            return None
        if lengths is not None and not closes_nothing(lengths, x.shape[int(self.batch_first)]):
            return None
        if self.training and (self.rate_penalty > 0 or self.dropout and self.num_layers > 1):
            return None
        if resolve_impl(self.impl, x.device, x.dtype) != "compiled" or not plain_call(x, hx):
            return None
        gates, params = self.gates, self._parameters
        for gate in gates:
            if not gate.time_only:
                return None
        if not all(name in params for names in self._names for name in names if name):
            return None
        if not self.batch_first:
            x = x.transpose(0, 1)
        T, nthreads = x.shape[1], torch.get_num_threads()
        served, hs = [], []
        for k, gate in enumerate(gates):
            g, active = gate(T, x, device=x.device, dtype=x.dtype)
            served.append((g, active))
            w, h0 = [params.get(name) for name in self._names[k]], None if hx is None else hx[k]
            plan = step_tables.served_extra(g, "step_plan", compiled.step_plan)
            if plan is None:  # a gate whose forward is its own (no table)
                x, h = compiled.infer(x, h0, *w, g, active, nthreads)
                h = h.unsqueeze(0)
            else:  # h: [1, B, H]
                x, h = compiled.infer_plan(x, h0, *w, plan, nthreads)
            hs.append(h)
        self.last = self._served_last(served)
        h_n = hs[0] if len(hs) == 1 else torch.cat(hs)
        return (x if self.batch_first else x.transpose(0, 1)), h_n

    def _served_last(self, served: list) -> LastCall:
        """The ``LastCall`` of gates served as ``served`` [(g, active)]: the previous one
        when the views are the same objects (their rates are computed once per view)."""
        kept = self._kept
        same = kept is not None and len(kept[0]) == len(served)
        if same and all(a[0] is b[0] for a, b in zip(kept[0], served)):
            return kept[1]
        rates = [update_rates(g, active) for g, active in served]
        last = LastCall([g for g, _ in served], [r for r, _ in rates], [a for _, a in rates], None)
        self._kept = (served, last)
        return last


def _pack_like(input: PackedSequence, x: torch.Tensor, lengths: torch.Tensor) -> PackedSequence:
    """``x`` ([B, T, H], the caller's batch order) packed with ``input``'s batch sizes and
    sorted/unsorted indices, as ``torch.nn.GRU`` returns it."""
    order = input.sorted_indices
    if order is not None:
        x, lengths = x.index_select(0, order.to(x.device)), lengths[order.cpu()]
    data = pack_padded_sequence(x, lengths.cpu(), batch_first=True).data
    return PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)


@torch.no_grad()
def _steer(gate, T, x, lengths, target: float, iters: int = 40, t0: int = 0) -> None:
    """Move ``gate.rate_offset`` so that the gate's rate over this batch's valid positions
    is ``target``: bisection on one offset shared by every neuron (the rate is monotone in
    it), on the device (no host sync). Ends on the side at or above the target; precision:
    the pre-activation's range / 2^iters, so the rate is off by at most the ties at the
    threshold (one (position, neuron) for a rhythm gate)."""
    a = gate.preactivation(T, x, x.device, t0=t0).float()  # includes the current offset
    if lengths is not None:
        lengths = lengths.to(x.device)
        counts = (torch.arange(T, device=x.device)[:, None] < lengths[None, :]).sum(1)
    if lengths is None:
        w = a.new_ones((1,) * a.dim())
        n = a.new_tensor(float(a.numel()))
    elif a.dim() == 2:  # time-only gate: step t counts for the sequences still running
        w = counts.to(a.dtype)[:, None]
        n = counts.sum().to(a.dtype) * a.shape[-1]
    else:  # per-sample gate [B, T, H]
        w = valid_mask(lengths, T).to(a.dtype)[..., None]
        n = w.sum() * a.shape[-1]
    n = n.clamp(min=1.0)
    pad = gate.open_margin()
    lo, hi = -a.max() - pad, -a.min() + pad  # rate 0 at lo, 1 at hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = (gate.open_fraction(a + mid) * w).sum() / n < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    gate.rate_offset.add_(hi)
