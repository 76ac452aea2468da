"""The launch model of the Triton path: tile configuration, split-K, chunk length, and the
per-step cost estimate (roofline) they imply. Untuned: written without a GPU; every time
below is an estimate from datasheet numbers and the stated assumptions, for the first GPU
run (scripts/gpu_check.sh) to be compared with.

Tiles. The forward step computes h_t for a tile of BLOCK_B sequences x BLOCK_H neurons of
the step's order (active neurons first), reducing over K = H (the recurrent weights only: the
input projection is one GEMM per chunk of steps, outside the sequential loop). The backward
step computes dL/dh_{t-1} for a tile of BLOCK_B sequences x BLOCK_H neurons (natural order),
reducing over K = 3 x the active neurons of step t+1. ``CFG_TABLE`` picks the tile by batch
size (``CFG_TABLE_SM80`` before sm_90); ``block_k_for`` the reduction block by precision.

Split-K (the wave model). A step launches ``n_bt x n_ht x SPLIT`` programs (batch tiles x
neuron tiles x splits). At a step with ``a`` tiles holding work (forward: the active tiles;
backward: every tile) each of the ``n_bt * a`` tiles runs its reduction in
``S = clamp(n_sm // (n_bt * a), 1, min(SPLIT, nkb // MIN_KB))`` programs, each over 1/S of K,
so that one wave of programs covers the SMs; the last program of a tile to finish adds the
partial sums in split order (deterministic) and applies the pointwise part. A step's time is
modelled as the latency of one program: it streams its share of the weights and of the state
rows from L2 at the bandwidth one SM gets, so spreading a step over more SMs shortens it as
long as the programs fit in one wave. S is computed on the device from the step's active count
(kernels._splits, the same formula as ``splits`` here), so a step with 17% of the neurons
active uses more splits than a step with all of them. Programs beyond S exit at once. The
partial sums' round trip costs about a microsecond (an assumption), so the grid splits only
where one program's unsplit share of a step streams more than SPLIT_MIN_BYTES (``split_max``):
at bf16 that is H >= ~1,200 for 16-row tiles and H >= ~800 for 64-row tiles.

Chunks. Steps run in chunks of C: per chunk the input projection (and, in the backward, the
recomputed pre-activations and the weight/input gradients) is one GEMM over C*B rows, and C
step launches follow. C is the smallest power of two with C*B >= GEMM_ROWS (a GEMM size that
keeps tensor cores busy), between C_MIN and C_MAX, and at most the next power of two >= T. A
CUDA graph captures one chunk of C launches and serves every sequence length (graphs.py).

Closed steps. A step at which no neuron is computed (a time-only gate closed everywhere, or a
per-sample gate closed for every sequence) has all-zero gradient rows, so the backward's
gradient GEMMs of a chunk (dW_ih, dW_hh, dx: 3 of its 5 GEMMs) may run over the open steps
only: their rows of G, x and h_{t-1} gathered into a compact block, dx scattered back (zero
at closed steps). At B=64, D=H=1024, bf16 those GEMMs take ~2.0 us per step (``step_cost``'s
GEMM model) and the gathers and the scatter of an open step move ~1.9 MB (~0.6 us at HBM
bandwidth): compacting pays once about a fifth of the chunk's steps are closed, and a chunk
is compacted where at least COMPACT_MIN_CLOSED of its steps are (an estimate, for the first
GPU run to check). The recompute GEMMs stay dense: the step kernel reads their results at
per-step slots, and scattering them back would cost about what it saves.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

ENV_SPLIT = "SURNN_TRITON_SPLIT"  # caps split-K (1: off); read at each call


@dataclass(frozen=True, order=True)
class Cfg:
    """Tile sizes and warps of both step kernels; ``block_k`` is for bf16 (see
    ``block_k_for``)."""

    block_b: int
    block_h: int
    block_k: int
    num_warps: int


def block_k_for(cfg: Cfg, prec: str) -> int:
    """The reduction block of a run: ``cfg.block_k`` for bf16 ("bf16"); half of it for TF32
    dots (the same bytes per pipeline stage); 16 for IEEE fp32 dots, which run on FMA units
    with each thread holding its rows and columns of both operands in registers."""
    if prec == "bf16":
        return cfg.block_k
    return max(16, cfg.block_k // 2) if prec.startswith("tf32") else 16


# (largest B the row serves, or None for any B; the configuration). The first row that serves
# B wins. A new configuration goes here: aot.py compiles every row and checks its IR (no
# spills, no duplicated MMA, async copies), tests/surnn/test_triton_aot.py fails otherwise.
# The warps must tile each dot without repeating an MMA. The three dots of a step share an
# operand, and Triton then lays all the warps of an mma.sync dot along its longer side (M
# when M >= N): 16 x 32 on 4 warps (1 x 4 along N), 32 x 64 on 8 warps (1 x 8 along N). On
# sm_90 a 64-row tile is one wgmma group of 64 rows, and 8 warps split N (4 x 2); on sm_80 its
# 8 warps would stack 128 rows of mma.sync on 64 (every MMA twice), so sm_80 stops at the
# 32-row tile. Per thread the output tile holds 4, 8 and 8 elements: the pointwise part keeps
# about 15 values per element live, which is what fills the registers (16 elements per thread,
# e.g. 64 x 32 on 4 warps, reach the 255-register cap).
CFG_TABLE: tuple[tuple[int | None, Cfg], ...] = (  # sm_90 and newer
    (16, Cfg(16, 32, 64, 4)),
    (32, Cfg(32, 64, 64, 8)),
    (None, Cfg(64, 32, 64, 8)),
)
CFG_TABLE_SM80: tuple[tuple[int | None, Cfg], ...] = (  # sm_80 / sm_86 / sm_89
    (16, Cfg(16, 32, 64, 4)),
    (None, Cfg(32, 64, 64, 8)),
)

N_SM = 132  # H100 SXM5; on CUDA the device's multi_processor_count replaces it
SPLIT_MAX = 8  # the grid's split dimension at most
MIN_KB = 2  # K blocks per split at least (something for the copy pipeline to overlap)
# split-K only where a program's share of a step, unsplit, streams more than this many bytes
# (assumption: about twice what an SM streams from L2 during one split-K synchronisation,
# ~1 us at ~110 GB/s; below it the partial sums' round trip costs more than it saves)
SPLIT_MIN_BYTES = 256 * 1024
GEMM_ROWS = 8192  # rows of a chunk's GEMMs at least (C * B)
COMPACT_MIN_CLOSED = 0.25  # the backward's GEMMs skip closed steps from this fraction on
C_MIN, C_MAX = 16, 256


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pow2ceil(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def table(arch: int = 90) -> tuple[tuple[int | None, Cfg], ...]:
    """The configuration table of a compute capability (major * 10 + minor)."""
    return CFG_TABLE if arch >= 90 else CFG_TABLE_SM80


def cfg_for(B: int, arch: int = 90) -> Cfg:
    for max_b, cfg in table(arch):
        if max_b is None or max_b >= B:
            return cfg
    raise AssertionError("a configuration table must end with a row for any B")


def cfg_choices(arch: int = 90) -> list[Cfg]:
    """Every configuration cfg_for can return for ``arch`` (aot.py compiles them all)."""
    return sorted({cfg for _, cfg in table(arch)})


def split_max(H: int, cfg: Cfg, prec: str = "bf16") -> int:
    """The grid's split dimension: enough splits for one tile to spread its reduction over
    SPLIT programs, each with MIN_KB K blocks, where a program's unsplit stream of a forward
    step (3 x BLOCK_H weight rows and BLOCK_B state rows of H) exceeds SPLIT_MIN_BYTES, else 1;
    $SURNN_TRITON_SPLIT caps it (1: no split-K)."""
    elt = 2 if prec == "bf16" else 4
    if (3 * cfg.block_h + cfg.block_b) * H * elt < SPLIT_MIN_BYTES:
        return 1
    s = max(1, min(SPLIT_MAX, cdiv(H, block_k_for(cfg, prec)) // MIN_KB))
    cap = os.environ.get(ENV_SPLIT, "").strip()
    return max(1, min(s, int(cap))) if cap else s


def splits(work_tiles: int, nkb: int, n_sm: int, split: int) -> int:
    """Programs per tile at a step with ``work_tiles`` tiles holding work and ``nkb`` K blocks
    (the formula of kernels._splits, which evaluates it on the device)."""
    s = n_sm // max(work_tiles, 1)
    s = min(s, nkb // MIN_KB, split)
    return max(s, 1)


MAX_ELEMENTS = 2**31 - 1  # the kernels' 32-bit offsets address chunk buffers below this


def chunk_len(B: int, T: int, H: int = 1) -> int:
    """Steps per chunk (see the module docstring); at least 2 (the backward reads step t+1's
    gradients from the slot after t), and small enough that the largest chunk buffer,
    [C + 1, B, 4H], stays under 2**31 elements."""
    c = min(max(pow2ceil(cdiv(GEMM_ROWS, max(B, 1))), C_MIN), C_MAX)
    c = max(2, min(c, pow2ceil(T)))
    fit = MAX_ELEMENTS // max(1, B * 4 * H) - 1
    if fit < 2 or 3 * SPLIT_MAX * B * H > MAX_ELEMENTS:
        raise ValueError(
            f"surnn triton: B*H = {B * H} is too large for the kernels' 32-bit "
            f"offsets (at most {MAX_ELEMENTS // (4 * 3 * SPLIT_MAX)}); split the "
            "batch"
        )
    return min(c, 1 << (fit.bit_length() - 1))


@dataclass(frozen=True)
class Launch:
    """Everything the op needs to launch a call of these sizes."""

    cfg: Cfg
    block_k: int
    split: int
    chunk: int
    n_sm: int
    n_bt: int
    n_ht: int


def plan(B: int, H: int, T: int, n_sm: int = N_SM, prec: str = "bf16", arch: int = 90) -> Launch:
    """``prec``: "bf16" for bf16 storage, else the fp32 dots' precision (op.PRECISIONS);
    ``arch``: the compute capability (90 where there is no GPU: the design target)."""
    cfg = cfg_for(B, arch)
    return Launch(
        cfg,
        block_k_for(cfg, prec),
        split_max(H, cfg, prec),
        chunk_len(B, T, H),
        n_sm,
        cdiv(B, cfg.block_b),
        cdiv(H, cfg.block_h),
    )


# -- the per-step cost estimate (roofline) ----------------------------------------------------
# H100 SXM5 (datasheet; dense tensor-core rates) and assumptions, stated: not measured here.
H100 = dict(
    name="H100 SXM5 (datasheet numbers + stated assumptions; not a measurement)",
    n_sm=132,
    hbm_Bps=3.35e12,  # datasheet
    tc_bf16_flops=989e12,  # datasheet, dense
    tc_tf32_flops=495e12,  # datasheet, dense
    l2_Bps_per_sm=64 * 1.755e9,  # assumption: 64 B/clock per SM from L2 at 1.755 GHz
    gemm_eff=0.6,  # assumption: cuBLAS reaches 60% of peak on these GEMM shapes
    # assumption: a dependent kernel of a CUDA graph, launch to completion, when it does
    # nothing but its chain of dependent global loads (count, order, operands, epilogue)
    step_overhead_s=2.0e-6,
    sync_s=1.0e-6,  # assumption: split-K's partial sums out, the arrival counter, sums in
)


def _prog_time(stream_bytes: float, flops: float, hw: dict, tc: float) -> float:
    """One program's work: streaming its operands from L2 or its MMAs, whichever is longer."""
    return max(stream_bytes / hw["l2_Bps_per_sm"], flops / (tc / hw["n_sm"]))


def _dense(flops: float, nbytes: float, hw: dict, tc: float) -> dict:
    t = max(flops / (tc * hw["gemm_eff"]), nbytes / hw["hbm_Bps"])
    return dict(flops=flops, hbm_bytes=nbytes, time_s=t)


def step_cost(
    B: int, D: int, H: int, rate: float, elt: int = 2, train: bool = True, hw: dict = H100
) -> dict:
    """FLOPs, bytes and the estimated time of one step at update rate ``rate`` (the fraction of
    neurons active, time-only gate, full lengths), for the kernels and launch model of this
    package: the step kernels (one program's share streamed from L2 at one SM's bandwidth,
    the launch overhead, split-K's synchronisation) and the dense per-chunk work per step
    (GEMMs at ``gemm_eff`` of the tensor-core peak or HBM-bound, layout copies). ``elt``: 2
    for bf16, 4 for fp32 with TF32 dots. An estimate for comparing with the first GPU run."""
    prec = "bf16" if elt == 2 else "tf32"
    lp = plan(B, H, 1 << 20, hw["n_sm"], prec)
    cfg, f4, e = lp.cfg, 4, elt
    P = -(-H // 16) * 16
    act = max(1, round(rate * H))
    act_tiles = cdiv(act, cfg.block_h)
    tc = hw["tc_bf16_flops"] if elt == 2 else hw["tc_tf32_flops"]
    tile = cfg.block_b * cfg.block_h

    # forward step: the active tiles reduce over K = P
    nkb = cdiv(P, lp.block_k)
    s = splits(lp.n_bt * act_tiles, nkb, hw["n_sm"], lp.split)
    progs = lp.n_bt * act_tiles * s
    k_share = cdiv(nkb, s) * lp.block_k
    prog_bytes = (3 * cfg.block_h + cfg.block_b) * k_share * e
    prog_flops = 2 * cfg.block_b * 3 * cfg.block_h * k_share
    epi = (
        lp.n_bt * act_tiles * tile * (3 * f4 + 2 * f4 + e + e + 1 + (f4 if train and e == 2 else 0))
    )
    carry = lp.n_bt * (lp.n_ht - act_tiles) * tile * (f4 + e + (f4 if train and e == 2 else 0))
    part = 2 * s * 3 * tile * f4 * lp.n_bt * act_tiles if s > 1 else 0
    fwd = dict(
        splits=s,
        programs=progs,
        l2_bytes=progs * prog_bytes,
        l2_bytes_per_program=prog_bytes,
        other_bytes=epi + carry + part,
        flops=2 * B * 3 * act * H,
        time_s=hw["step_overhead_s"]
        + math.ceil(progs / hw["n_sm"]) * _prog_time(prog_bytes, prog_flops, hw, tc)
        + (hw["sync_s"] if s > 1 else 0.0),
    )
    f_bytes = B * D * e * 3 + 3 * P * D * e / lp.chunk + B * 3 * P * f4 + 2 * B * H * e
    if train and e == 2:
        f_bytes += 2 * B * H * f4  # the fp32 state copied out
    out = dict(
        sizes=dict(B=B, D=D, H=H, rate=rate, active=act, bytes_per_element=e, train=train),
        launch=dict(
            cfg=vars(cfg),
            block_k=lp.block_k,
            split_max=lp.split,
            chunk=lp.chunk,
            n_bt=lp.n_bt,
            n_ht=lp.n_ht,
        ),
        fwd_step=fwd,
        fwd_dense=_dense(2 * B * D * 3 * P, f_bytes, hw, tc),
    )
    if train:
        # backward step: every tile; K = 3 x the active neurons of step t+1 (whole blocks)
        nkb = cdiv(act, lp.block_k)
        s = splits(lp.n_bt * lp.n_ht, nkb, hw["n_sm"], lp.split)
        progs = lp.n_bt * lp.n_ht * s
        k_share = cdiv(nkb, s) * lp.block_k
        prog_bytes = 3 * k_share * (cfg.block_h + cfg.block_b) * e
        prog_flops = 2 * cfg.block_b * cfg.block_h * 3 * k_share
        point = B * H * (e + 1 + e + 2 * f4 + 4 * e + 3 * e) + B * act * (6 * f4 + f4)
        part = 2 * s * tile * f4 * lp.n_bt * lp.n_ht if s > 1 else 0
        out["bwd_step"] = dict(
            splits=s,
            programs=progs,
            l2_bytes=progs * prog_bytes,
            l2_bytes_per_program=prog_bytes,
            other_bytes=point + part,
            flops=2 * B * 3 * act * H,
            time_s=hw["step_overhead_s"]
            + math.ceil(progs / hw["n_sm"]) * _prog_time(prog_bytes, prog_flops, hw, tc)
            + (hw["sync_s"] if s > 1 else 0.0),
        )
        b_flops = 2 * B * 3 * P * (3 * D + 2 * P)  # recompute x and h parts; dW_ih, dW_hh, dx
        b_bytes = B * (2 * 3 * P * f4 + 3 * 4 * P * e + 3 * D * e + 5 * H * e)
        b_bytes += 3 * P * (D + P) * f4 * 2 / lp.chunk  # weight-gradient accumulators per chunk
        if e == 2:
            b_bytes += 2 * B * H * f4
        out["bwd_dense"] = _dense(b_flops, b_bytes, hw, tc)
    parts = [v["time_s"] for k, v in out.items() if isinstance(v, dict) and "time_s" in v]
    out["total_time_s"] = sum(parts)
    return out


def memory_bytes(
    B: int,
    T: int,
    D: int,
    H: int,
    elt: int = 2,
    train: bool = True,
    per_sample_gate: bool = False,
    n_sm: int = N_SM,
) -> dict:
    """Device memory one layer call of the op allocates (the README's formula; e = ``elt``
    bytes per storage element, f = 4, P = H rounded up to 16):

    full (grows with T): out B*T*H*e; for bf16 training the fp32 state B*T*H*f; the mask
    T*H bytes (B*T*H per sample); order, its inverse and counts T*H*f*(1 + train) + T*f;
    training: dx B*T*D*e, dg B*T*H*e per sample or T*H*f.
    fwd_chunk, bwd_chunk (chunk buffers, C = chunk length): forward C*B*(D*e + 3P*f) +
    (C+1)*B*P*e + B*P*f (+ C*B*P*f, bf16 training); backward C*B*(D*e + 2P*e + 6P*f + 4P*e)
    + (C+1)*B*3P*e + 2*B*P*f + C*P*f + the gate-gradient chunk (C*B*P*e per sample, else
    C*n_bt*P*f) (+ C*B*P*f, bf16); each plus the shared part: W_hh 3P*P*e, biases 4H*f, the
    gate and mask chunks C*H*(e+1) (C*B*H*(e+1) per sample), lengths and counts, order
    (C+1)*P*f, the split-K workspace SPLIT*3*B*P*f and its counters.
    total = full + fwd_chunk + bwd_chunk: a CUDA graph's static buffers replace the fresh
    ones (one static set per key, shared by the layers of one shape). Not counted: the
    caller's inputs and dL/d out (B*T*H*e), the weights' gradients, GEMM temporaries of a
    chunk (C*B*D*e + 3P*(D + P)*f; a compacted chunk's gathered rows, fewer than
    C*B*(5P + D)*e)."""
    f32 = 4
    lp = plan(B, H, T, n_sm, "bf16" if elt == 2 else "ieee")
    C, per, P = lp.chunk, per_sample_gate, -(-H // 16) * 16
    bt = B if per else 1
    full = B * T * H * elt + bt * T * H + T * H * f32 * (1 + train) + T * f32
    if train:
        full += B * T * H * f32 if elt == 2 else 0
        full += B * T * D * elt + (B * T * H * elt if per else T * H * f32)
    ws = lp.split * 3 * B * P * f32 if lp.split > 1 else f32
    shared = (
        3 * P * P * elt
        + 4 * H * f32
        + C * bt * H * (elt + 1)
        + B * f32
        + f32
        + (C + 1) * P * f32
        + (C + 1) * f32
        + ws
        + lp.n_bt * lp.n_ht * f32
    )
    fwd = shared + C * B * (D * elt + 3 * P * f32) + (C + 1) * B * P * elt + B * P * f32
    fwd += C * B * P * f32 if train and elt == 2 else f32  # the fp32 state chunk (bf16 training)
    bwd = 0
    if train:
        bwd = shared + C * B * (D * elt + 2 * P * elt + 6 * P * f32 + 4 * P * elt)
        bwd += (C + 1) * B * 3 * P * elt + 2 * B * P * f32 + C * P * f32
        bwd += C * B * P * elt if per else C * lp.n_bt * P * f32
        bwd += C * B * P * f32 if elt == 2 else 0
    return dict(full=full, fwd_chunk=fwd, bwd_chunk=bwd, chunk=C, total=full + fwd + bwd)
