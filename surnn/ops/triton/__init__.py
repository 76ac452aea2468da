"""Triton implementation of the selective-update GRU, registered with torch.library.

``surnn::su_gru_fwd`` and ``surnn::su_gru_bwd`` are custom ops with fake (meta)
implementations, an autograd formula and FLOP formulas, so they work under
torch.compile and FlopCounterMode (which then counts only executed updates).
"""

from surnn.ops.triton.op import su_gru_triton

__all__ = ["su_gru_triton"]
