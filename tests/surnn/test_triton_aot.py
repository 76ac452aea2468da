"""Ahead-of-time compilation of the Triton kernels for CUDA targets, without a GPU
(surnn/ops/triton/aot.py): every kernel the op launches, for every configuration the
dispatcher can pick, must compile for sm_90 (and sm_80) and pass the IR checks (no spills,
no MMA repeated by the warps, tensor cores where the dtype asks for them, asynchronous
copies); CI compiles a representative subset (aot.ci_jobs), the committed table
results/bench/triton_kernels.md has the whole matrix."""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("triton")

from surnn.ops.triton import aot, aot_report, launch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "results" / "bench" / "triton_kernels.json"


def _has_ptxas() -> bool:
    try:
        from triton import knobs

        return Path(knobs.nvidia.ptxas.path).exists() and Path(knobs.nvidia.cuobjdump.path).exists()
    except Exception:
        return False


needs_ptxas = pytest.mark.skipif(not _has_ptxas(), reason="triton wheel without ptxas/cuobjdump")


@pytest.mark.parametrize("arch", [80, 90])
def test_cfg_choices_are_everything_the_dispatcher_returns(arch):
    seen = {launch.cfg_for(B, arch) for B in range(1, 1100)}
    assert seen == set(launch.cfg_choices(arch))
    assert launch.table(arch)[-1][0] is None  # the last row serves any batch size


def test_every_kernel_is_launched_by_an_op_loop():
    """aot.py compiles what the op's loops launch: a kernel launched from elsewhere (or not
    at all) would escape the check."""
    launched = {name for body in aot.BODIES for name, _, _ in aot.record(body, 3, 5, 40, "bf16")}
    assert launched == set(aot.public_kernels()) == {"fwd_step", "bwd_step"}


def test_matrix_covers_kernels_configs_dtypes_archs():
    js = aot.jobs()
    got = {(j.kernel, j.body, j.cfg, j.dtype, j.arch, j.shape) for j in js}
    want = {
        (k, b, c, d, a, sh)
        for b, k in [
            ("fwd", "fwd_step"),
            ("fwd_save", "fwd_step"),
            ("bwd", "bwd_step"),
            ("bwd_ps", "bwd_step"),
        ]
        for a in (80, 90)
        for c in launch.cfg_choices(a)
        for d in ("fp32", "tf32", "bf16")
        for sh in ("aligned", "odd")
        if b != "fwd_save" or d == "bf16"
    }
    assert got == want
    for j in js:  # the recorded batch size really makes the dispatcher pick that config
        assert launch.cfg_for(j.B, j.arch) == j.cfg
    ci = aot.ci_jobs()
    assert {j.cfg for j in ci if j.arch == 90} == set(launch.cfg_choices())
    assert {j.dtype for j in ci} == {"fp32", "tf32", "bf16"} and {j.arch for j in ci} == {80, 90}


def test_bf16_launch_signature_matches_the_jit():
    """Spot check of the specialisation: bf16 storage, fp32 state and projections, u8 mask,
    i32 order; the step slot unspecialised; the row stride a multiple of 16."""
    ((_, args, kw),) = aot.record("fwd_save", 16, 64, 40, "bf16")
    names = [a for a in _params("fwd_step") if a not in kw]
    assert len(args) == len(names)
    vals = dict(zip(names, args))
    assert (
        str(vals["a_ptr"].dtype) == "torch.bfloat16"
        and str(vals["wh_ptr"].dtype) == "torch.bfloat16"
    )
    assert str(vals["xp_ptr"].dtype) == str(vals["hs_ptr"].dtype) == "torch.float32"
    assert (
        str(vals["act_ptr"].dtype) == "torch.uint8"
        and str(vals["order_ptr"].dtype) == "torch.int32"
    )
    assert vals["H"] == 40 and vals["HP"] == 48
    cfg = launch.cfg_for(16)
    assert kw == dict(
        SAVE=True,
        F32=False,
        PREC="ieee",
        SPLIT=1,
        MIN_KB=launch.MIN_KB,
        BLOCK_B=cfg.block_b,
        BLOCK_H=cfg.block_h,
        BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps,
    )


def _params(kernel: str) -> list[str]:
    """A kernel's parameters, read from kernels.py (importing it here could decorate it for
    the interpreter)."""
    tree = ast.parse((ROOT / "surnn" / "ops" / "triton" / "kernels.py").read_text())
    (f,) = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == kernel]
    return [a.arg for a in f.args.args]


def test_each_loop_passes_its_kernels_buffers_in_the_kernels_order():
    """loops.py launches a kernel with the buffers its loop names (``buffers``), positionally:
    they must be the kernel's pointer arguments, in order."""
    from surnn.ops.triton import loops

    for loop, kernel in ((loops.Fwd, "fwd_step"), (loops.Bwd, "bwd_step")):
        params = _params(kernel)
        ptrs = [a for a in params if a.endswith("_ptr")]
        assert params[: len(ptrs)] == ptrs  # the pointers come first
        assert [f"{b}_ptr" for b in loop.buffers.split()] == ptrs, kernel


def _result(**kw) -> aot.Result:
    job = aot.Job("fwd_step", "fwd", "aligned", 16, 64, 512, launch.cfg_for(16), "bf16", 90)
    base = dict(
        job=job,
        ok=True,
        regs=100,
        spill_stores=0,
        spill_loads=0,
        stack=0,
        shared=0,
        num_warps=4,
        ir=dict(
            dots=[
                dict(
                    M=16,
                    N=32,
                    K=64,
                    elt="bf16",
                    layout="mma",
                    tensor_core=True,
                    version=2,
                    warps=[1, 4],
                    instr=[16, 8, 16],
                    per_warp=4,
                    ideal=4.0,
                )
            ],
            ptx_mma=4,
            ptx_cp_async=8,
        ),
    )
    base.update(kw)
    return aot.Result(**base)


def test_ir_check_names_what_is_wrong():
    assert aot.ir_check(_result()) == []
    assert "spills 8/8" in aot.ir_check(_result(spill_stores=8, spill_loads=8))[0]
    assert (
        "no asynchronous copies" in aot.ir_check(_result(ir={**_result().ir, "ptx_cp_async": 0}))[0]
    )
    assert "PTX has 8 MMA" in aot.ir_check(_result(ir={**_result().ir, "ptx_mma": 8}))[0]
    fma = dict(_result().ir["dots"][0], tensor_core=False, layout="blocked")
    assert "on FMA" in aot.ir_check(_result(ir={**_result().ir, "dots": [fma], "ptx_mma": 0}))[0]


#: the forward as kernels.py writes it; the broken copy feeds tl.dot an fp32 operand there
GOOD_LOAD = "at = tl.load(a_ptr + a_off + k0, mask=rmask[:, None] & km[None, :], other=0.0)"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """aot.ci_jobs() and the two jobs the checks must fail on (the configuration table
    before, a broken copy of kernels.py), compiled into an empty cache by one pool of
    worker processes (each worker costs seconds of imports): {"ci", "old", "broken"}
    -> their results, and the pool's wall time."""
    tmp = tmp_path_factory.mktemp("aot")
    ci = aot.ci_jobs()
    old = aot.Job(
        "fwd_step", "fwd_save", "aligned", 32, 64, 512, launch.Cfg(32, 32, 32, 4), "bf16", 90
    )
    src = (ROOT / "surnn" / "ops" / "triton" / "kernels.py").read_text()
    assert GOOD_LOAD in src
    broken = tmp / "kernels_broken.py"
    broken.write_text(src.replace(GOOD_LOAD, GOOD_LOAD + ".to(tl.float32)"))
    fwd = next(j for j in ci if j.kernel == "fwd_step" and j.arch == 90 and j.dtype == "bf16")
    broken_job = aot.Job(**{**fwd.__dict__, "source": str(broken)})
    t0 = time.perf_counter()
    workers = min(os.cpu_count() or 1, 8)
    results = aot.compile_all([*ci, old, broken_job], workers, cache_dir=str(tmp / "cache"))
    wall = time.perf_counter() - t0
    return {"ci": results[: len(ci)], "old": results[-2], "broken": results[-1], "wall": wall}


@needs_ptxas
def test_every_kernel_compiles_and_passes_the_ir_checks(compiled):
    """The CI gate: compiles aot.ci_jobs() (every configuration's tensor-core kernels on
    sm_90, the rest at the largest tiles) into an empty cache; any compile error or IR
    problem fails with its message."""
    results = compiled["ci"]
    assert [r.job for r in results] == aot.ci_jobs()
    bad = [
        f"{r.job.kernel}/{r.job.body} sm_{r.job.arch} {r.job.dtype} {r.job.cfg}: "
        f"{'; '.join(aot.ir_check(r))}"
        for r in results
        if aot.ir_check(r)
    ]
    assert not bad, "kernels that fail:\n" + "\n\n".join(bad)
    for r in results:
        assert 0 < r.regs <= 255 and r.shared >= 0
    print(f"\n{len(results) + 2} kernels compiled and checked in {compiled['wall']:.1f} s")


@needs_ptxas
def test_the_checks_fail_on_the_configuration_table_before(compiled):
    """The check can fail: the table before (BLOCK_B=32 on 4 warps, the launch default) has
    its warps repeat every MMA of the forward's dots (warps 4 x 1 on 32 rows: 8 mma.sync per
    dot per warp where 4 would do)."""
    problems = aot.ir_check(compiled["old"])
    assert any("repeat MMAs" in p and "8 per warp where 4" in p for p in problems), problems


@needs_ptxas
def test_a_broken_kernel_fails_the_check(compiled):
    """The check can fail: a copy of kernels.py whose forward feeds tl.dot an fp32 and a bf16
    operand (the interpreter runs fp32 only, so its tests pass) must be reported."""
    r = compiled["broken"]
    assert r.job.source.endswith("kernels_broken.py")
    assert not r.ok and "CompilationError" in r.error, r.error


def test_committed_table_lists_the_whole_matrix():
    """results/bench/triton_kernels.{md,json} (python scripts/triton_report.py) must list
    every kernel x config x dtype x arch x shape of aot.jobs(), all compiled and checked."""
    assert TABLE.exists(), "run: python scripts/triton_report.py"
    data = json.loads(TABLE.read_text())
    have = {
        (
            r["kernel"],
            r["variant"],
            r["arch"],
            r["dtype"],
            r["shape"],
            (r["block_b"], r["block_h"], r["block_k"], r["warps"]),
        )
        for r in data["rows"]
    }
    want = {
        (
            j.kernel,
            aot_report._variant(j),
            f"sm_{j.arch}",
            j.dtype,
            j.shape,
            (j.cfg.block_b, j.cfg.block_h, j.cfg.block_k, j.cfg.num_warps),
        )
        for j in aot.jobs()
    }
    assert have == want, "stale table: rerun python scripts/triton_report.py"
    assert all(r["ok"] and not r["problems"] for r in data["rows"])
    assert TABLE.with_suffix(".md").exists()


def test_committed_roofline_is_current():
    """results/bench/triton_roofline.{md,json} (python scripts/triton_roofline.py) hold the
    launch model's current estimate: a change to the model or the tiles regenerates them."""
    from tests.fixtures import load_script

    path = ROOT / "results" / "bench" / "triton_roofline.json"
    assert path.exists(), "run: python scripts/triton_roofline.py"
    committed = json.loads(path.read_text())
    now = load_script("triton_roofline").build()
    for key in ("sizes", "rates", "hardware", "estimate", "memory"):
        assert json.loads(json.dumps(now[key])) == committed[key], (
            f"stale {key}: rerun python scripts/triton_roofline.py"
        )
    est = committed["estimate"]
    assert set(est) == {"1.0", "0.17"}
    for e in est.values():
        assert {"fwd_step", "fwd_dense", "bwd_step", "bwd_dense"} <= set(e)
        assert all(e[k]["flops"] > 0 and e[k]["time_s"] > 0 for k in ("fwd_step", "bwd_step"))


def test_the_writers_record_their_command_as_typed(tmp_path, monkeypatch):
    """triton_kernels.json and triton_roofline.json say how they were made, as the other
    benchmark JSONs do: the command (the script that runs the writer alone, with the
    arguments given), the commit and the date (no kernel compiled here: an empty matrix)."""
    import shlex

    from tests.fixtures import load_script

    monkeypatch.setattr(aot_report, "compile_all", lambda *a, **k: [])
    out = tmp_path / "k k"
    assert aot_report.main(["--out", str(out), "--arch", "90"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())["meta"]
    words = shlex.split(meta["command"])
    assert words[0] == "python" and words[2:] == ["--out", str(out), "--arch", "90"]
    assert Path(words[1]).resolve() == ROOT / "scripts" / "triton_report.py"
    assert meta["commit"] and meta["date"] and meta["n"] == 0

    roofline = load_script("triton_roofline")
    assert roofline.main(["--out", str(tmp_path / "roof")]) == 0
    d = json.loads((tmp_path / "roof.json").read_text())
    words = shlex.split(d["command"])
    assert words[0] == "python" and words[2:] == ["--out", str(tmp_path / "roof")]
    assert Path(words[1]).resolve() == ROOT / "scripts" / "triton_roofline.py"
    assert d["commit"] and d["date"] and d["kind"] == "triton_roofline"
