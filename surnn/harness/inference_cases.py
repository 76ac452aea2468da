"""The cases ``scripts/bench_checkpoint.py`` times on a trained model: the same weights in
torch.nn.GRU (``with_nn_gru``), the dense parts under torch.compile (``with_dense_compiled``),
how a fused model's outputs compare with the eager one's (``agreement``), and ``Clock``,
which times a model's passes and its recurrent layers within them."""

from __future__ import annotations

import contextlib
import copy
import time

import torch
from torch import nn

from surnn.gates import all_open
from surnn.layer import LastCall, SelectiveUpdateGRU


class DenseGRU(nn.Module):
    """A suRNN layer's weights in torch.nn.GRU (every step of every neuron computed, the
    padding steps too; outputs at valid positions equal the all-open suRNN's)."""

    def __init__(self, su: SelectiveUpdateGRU):
        super().__init__()
        self.gru = nn.GRU(su.input_size, su.hidden_size, su.num_layers, su.bias, batch_first=True)
        self.gru.load_state_dict(
            {k: v for k, v in su.state_dict().items() if not k.startswith("gates.")}
        )
        self.batch_first, self.num_layers = su.batch_first, su.num_layers
        ones = [torch.ones(())] * su.num_layers
        self.last = LastCall([], ones, ones, None)  # every update computed

    def forward(self, input, hx=None, lengths=None, t0=0):
        x = input if self.batch_first else input.transpose(0, 1)
        out, h = self.gru(x, hx)
        return (out if self.batch_first else out.transpose(0, 1)), h


def with_dense_compiled(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose dense parts run under ``torch.compile`` (dynamic shapes)
    and whose suRNN mixers run eagerly, outside the graph (as in the uncompiled model: their
    served step tables and the C++ kernel), so that only the dense parts change. The mixer
    around each suRNN layer is left out whole, with the timing hooks inside it: one graph
    break per layer."""
    dense = copy.deepcopy(model)
    for m in dense.modules():
        if any(isinstance(c, SelectiveUpdateGRU) for c in m.children()):
            m.forward = torch.compiler.disable(m.forward)
    return torch.compile(dense, dynamic=True)


def with_nn_gru(model: nn.Module) -> nn.Module:
    dense = copy.deepcopy(model)
    for m in list(dense.modules()):
        if isinstance(getattr(m, "rnn", None), SelectiveUpdateGRU):
            m.rnn = DenseGRU(m.rnn)
    return dense


def agreement(fused, eager, batches) -> dict:
    """How the fused model's outputs compare with the eager one's over ``batches``: the
    largest absolute difference and, for class scores, how many predictions agree."""
    diff, same, total = 0.0, 0, 0
    with torch.no_grad():
        for b in batches:
            f, e = fused(b)[0], eager(b)[0]
            diff = max(diff, float((f - e).abs().max()))
            if f.dim() >= 2:
                same += int((f.argmax(-1) == e.argmax(-1)).sum())
                total += f.argmax(-1).numel()
    return {"max_abs_diff": diff, "predictions_agree": same if total else None, "of": total}


class _Timed:
    """A module's own forward, its time added to ``clock.mixer``. Copied with the module
    (``copy.deepcopy``), it times the copy, for a copy of the clock."""

    def __init__(self, clock: Clock, module: nn.Module):
        self.clock, self.module = clock, module

    def __call__(self, *args, **kwargs):
        clock = self.clock
        clock.sync()
        t0 = time.perf_counter()
        out = type(self.module).forward(self.module, *args, **kwargs)
        clock.sync()
        clock.mixer += time.perf_counter() - t0
        return out


class Clock:
    """Times a model's passes over batches, and its recurrent layers within them."""

    def __init__(self, device: torch.device):
        self.device, self.mixer, self.cpu = device, 0.0, 0.0

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def attach(self, model: nn.Module) -> None:
        """Time ``model``'s recurrent layers: each one's ``forward`` becomes a ``_Timed``
        (an instance attribute, not module hooks, whose dispatch costs ~5 us a call at
        batch 1 outside the timed span, which the dense parts' column would count)."""
        for m in model.modules():
            if isinstance(m, (SelectiveUpdateGRU, DenseGRU)):
                m.forward = _Timed(self, m)

    def run(self, model, batches, tokens, open_gates: bool) -> tuple[float, float, dict]:
        """(whole-model seconds, recurrent-layer seconds, update rate per layer weighted
        per valid token as Trainer.evaluate weights it) of one pass over ``batches``."""
        auxes = []
        self.mixer, self.cpu = 0.0, time.process_time()
        ctx = all_open() if open_gates else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            self.sync()
            t0 = time.perf_counter()
            for b in batches:
                auxes.append(model(b)[1])
            self.sync()
            total = time.perf_counter() - t0
        self.cpu = time.process_time() - self.cpu  # all threads: > total unless preempted
        rates: dict[str, float] = {}
        for aux, n in zip(auxes, tokens):
            for k, v in aux.items():
                if k.endswith("/update_rate"):
                    rates[k.split("/")[0]] = rates.get(k.split("/")[0], 0.0) + float(v) * n
        return total, self.mixer, {k: v / max(sum(tokens), 1) for k, v in rates.items()}
