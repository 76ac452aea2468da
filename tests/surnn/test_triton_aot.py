"""Ahead-of-time compilation of the Triton kernels for CUDA targets, without a GPU
(surnn/ops/triton/aot.py): every kernel the op launches, for every configuration the
dispatcher can pick, must compile for sm_90 (and sm_80, a representative subset here;
the committed table results/bench/triton_kernels.md has the whole matrix)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("triton")

from surnn.ops.triton import aot  # noqa: E402
from surnn.ops.triton.op import _CFG_TABLE, _cfg, cfg_choices  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "results" / "bench" / "triton_kernels.json"


def _has_ptxas() -> bool:
    try:
        from triton import knobs

        return Path(knobs.nvidia.ptxas.path).exists() and Path(knobs.nvidia.cuobjdump.path).exists()
    except Exception:
        return False


needs_ptxas = pytest.mark.skipif(not _has_ptxas(), reason="triton wheel without ptxas/cuobjdump")


def test_cfg_choices_are_everything_the_dispatcher_returns():
    seen = {_cfg(B, D, H) for B in range(1, 1100) for D in (1, 40, 64, 1024) for H in (8, 64, 1024)}
    assert seen == set(cfg_choices())
    assert _CFG_TABLE[-1][0] is None  # the last row serves any batch size


def test_every_kernel_is_launched_by_an_op_body():
    """aot.py compiles what the op's loop bodies launch: a kernel launched from elsewhere
    (or not at all) would escape the check."""
    launched = {name for body in aot.BODIES for name, _, _ in aot.record(body, 3, 5, 40, "bf16")}
    assert launched == set(aot.public_kernels()) == {"fwd_step", "bwd_point", "bwd_matmul"}


def test_matrix_covers_kernels_configs_dtypes_archs():
    js = aot.jobs()
    got = {(j.kernel, j.body, j.cfg, j.dtype, j.arch) for j in js}
    want = {
        (k, b, c, d, a)
        for b, k in [
            ("fwd", "fwd_step"),
            ("fwd_save", "fwd_step"),
            ("bwd", "bwd_point"),
            ("bwd", "bwd_matmul"),
        ]
        for c in cfg_choices()
        for d in ("fp32", "bf16")
        for a in (80, 90)
    }
    assert got == want
    for j in js:  # the recorded batch size really makes the dispatcher pick that config
        assert _cfg(j.B, j.D, j.H) == j.cfg


def test_bf16_launch_signature_matches_the_jit():
    """Spot check of the specialisation: bf16 storage, fp32 state and saved planes, u8
    mask, i32 order; the step index and length unspecialised."""
    fwd = aot.record("fwd_save", 16, 64, 64, "bf16")
    (_, args, kw) = fwd[0]
    names = [
        "x_ptr",
        "wx_ptr",
        "wh_ptr",
        "bx_ptr",
        "bh_ptr",
        "g_ptr",
        "a_ptr",
        "len_ptr",
        "order_ptr",
        "cnt_ptr",
        "hs_ptr",
        "out_ptr",
        "sr_ptr",
        "sz_ptr",
        "sn_ptr",
        "shn_ptr",
        "shp_ptr",
        "t",
        "B",
        "T",
        "D",
        "H",
        "sgb",
        "sab",
    ]
    vals = dict(zip(names, args))
    assert vals["x_ptr"].dtype.is_floating_point and str(vals["x_ptr"].dtype) == "torch.bfloat16"
    assert (
        str(vals["hs_ptr"].dtype) == "torch.float32"
        and str(vals["sr_ptr"].dtype) == "torch.float32"
    )
    assert kw == dict(SAVE=True, IEEE=False, BLOCK_B=16, BLOCK_H=32, BLOCK_K=32)
    assert len(args) == len(names)


@needs_ptxas
def test_every_kernel_compiles_for_sm90_and_sm80(tmp_path):
    """The CI gate: compiles aot.ci_jobs() (all of sm_90 for the usual shapes, sm_80 for the
    largest tiles) into an empty cache; any compile error fails with its message."""
    jobs = aot.ci_jobs()
    assert {j.arch for j in jobs} == {80, 90}
    t0 = time.perf_counter()
    workers = min(os.cpu_count() or 1, 8)
    results = aot.compile_all(jobs, workers=workers, cache_dir=str(tmp_path / "triton-cache"))
    wall = time.perf_counter() - t0
    bad = [
        f"{r.job.kernel}/{r.job.body} sm_{r.job.arch} {r.job.dtype} {r.job.cfg}: {r.error}"
        for r in results
        if not r.ok
    ]
    assert not bad, "kernels that do not compile:\n" + "\n\n".join(bad)
    for r in results:
        assert 0 < r.regs <= 255 and r.shared >= 0 and r.spill_stores >= 0
    print(f"\n{len(results)} kernels compiled in {wall:.1f} s")


@needs_ptxas
def test_a_broken_kernel_fails_the_check(tmp_path):
    """The check can fail: a copy of kernels.py whose bwd_matmul feeds tl.dot an fp32 and a
    bf16 operand (the interpreter runs fp32 only, so its tests pass) must be reported."""
    src = (ROOT / "surnn" / "ops" / "triton" / "kernels.py").read_text()
    good = "acc += _dot(a.to(w.dtype), w, IEEE)"
    assert good in src
    broken = tmp_path / "kernels_broken.py"
    broken.write_text(src.replace(good, "acc += _dot(a, w, IEEE)"))
    job = next(
        j for j in aot.ci_jobs() if j.kernel == "bwd_matmul" and j.arch == 90 and j.dtype == "bf16"
    )
    job = aot.Job(**{**job.__dict__, "source": str(broken)})
    (r,) = aot.compile_all([job], workers=1, cache_dir=str(tmp_path / "cache"))
    assert not r.ok and "CompilationError" in r.error, r.error


def test_committed_table_lists_the_whole_matrix():
    """results/bench/triton_kernels.{md,json} (python scripts/triton_report.py) must list
    every kernel x config x dtype x arch x shape of aot.jobs(), all compiled."""
    assert TABLE.exists(), "run: python scripts/triton_report.py"
    data = json.loads(TABLE.read_text())
    have = {
        (
            r["kernel"],
            r["variant"],
            r["arch"],
            r["dtype"],
            r["shape"],
            (r["block_b"], r["block_h"], r["block_k"]),
        )
        for r in data["rows"]
    }
    want = {
        (j.kernel, aot._variant(j), f"sm_{j.arch}", j.dtype, j.shape, j.cfg) for j in aot.jobs()
    }
    assert have == want, "stale table: rerun python scripts/triton_report.py"
    assert all(r["ok"] for r in data["rows"])
    assert TABLE.with_suffix(".md").exists()
