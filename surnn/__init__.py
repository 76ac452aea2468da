"""Selective-Update RNNs: a GRU whose neurons update only when their gate is open.

The method stands alone and needs only torch::

    import surnn
    rnn = surnn.SelectiveUpdateGRU(64, 128, batch_first=True, gate={"kind": "rhythm"})
    out, h_n = rnn(x)              # drop-in for torch.nn.GRU; closed neurons keep their state
    out, h_T = surnn.su_gru(x, h0, w_ih, w_hh, b_ih, b_hh, g)   # the op, any implementation

- ``surnn.layer``: ``SelectiveUpdateGRU`` (``nn.GRU`` constructor, weights and outputs).
- ``surnn.gates``: the gate kinds (``GATES``: rhythm, soft, random, interval, open,
  content, input) and ``build_gate``.
- ``surnn.ops``: ``su_gru`` with its implementations (reference, cpu, triton).

``surnn.harness`` (the training harness: backbone, registries, trainer, Hydra entry) is
built on top of this and is never imported by it.
"""

from surnn.errors import ConfigError
from surnn.gates import GATES, Gate, all_open, build_gate, gate_options
from surnn.layer import SelectiveUpdateGRU
from surnn.ops import IMPLS, su_gru

__all__ = [
    "GATES",
    "IMPLS",
    "ConfigError",
    "Gate",
    "SelectiveUpdateGRU",
    "all_open",
    "build_gate",
    "gate_options",
    "su_gru",
]
