"""The Markdown report of ``scripts/bench_checkpoint.py``: a trained checkpoint's inference
cases (whole model, recurrent layers, dense parts), the speedups of its learned gate, how
its fused dense parts and torch.compile compare with the eager ones, and the paper's
published numbers beside them (``results/paper_reference.json``)."""

from __future__ import annotations

import json
from pathlib import Path

DENSE_PARTS = "embedding, feed-forward, norms, pooling and head"


def markdown(b: dict) -> str:
    c = b["cases"]
    pairs = {  # a speedup of the learned gate over each baseline row (not over its eager twin)
        p["baseline"]: p
        for p in b["pairs"]
        if p["case"] == "learned" and p["baseline"] != "eager_dense"
    }
    rate = " / ".join(f"{v:.3f}" for v in b["update_rate"].values())
    lines = [
        f"# Efficiency of a trained checkpoint: {b['task']} {b['model']}",
        "",
        f"- run: `{b['run_dir']}` ({b['checkpoint']}, step {b['checkpoint_step']})",
        f"- setting: {b['setting'] or 'standard'} (scale {b['scale']}); **{b['setting_note']}**",
        f"- measured on the first {b['examples']} of {b['test_examples_total']} test sequences, "
        f"batch {b['batch']}, {b['reps']} repetitions, {b['threads']} threads, {b['device']}, "
        f"commit {b['commit'][:12]}; load average {b['loadavg_before'][0]:.2f} before, "
        f"{b['loadavg_after'][0]:.2f} after",
        f"- update rate per layer (per valid token, as the trainer reports it): {rate}; "
        f"skipped {100 * b['skipped']:.1f}%",
        f"- the run's results.json: {_recorded(b)}",
        "",
    ]
    if b["cpu_per_wall"] < 0.8:
        lines += [
            f"**Warning: a fastest pass got {b['cpu_per_wall']:.0%} of a CPU over its wall "
            "time: the process was preempted (a busy machine), the minimum times are inflated; "
            "rerun on a quiet machine or with more --reps.**",
            "",
        ]
    elif b["preempted_passes"]:
        lines += [
            f"{b['preempted_passes']} of {b['passes']} timed passes were preempted (CPU time "
            "under 80% of wall time); each case's fastest pass was not.",
            "",
        ]
    lines += [
        "| case | update rate | whole model ms/seq | recurrent layers ms/seq "
        "| dense parts ms/seq | speedup of the learned gate (model) | (recurrent layers) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in c.items():
        ur = v["update_rate"]
        ur = "1 (dense)" if ur is None else " / ".join(f"{x:.3f}" for x in ur.values())
        p = pairs.get(name)
        sp = (f"{p['speedup_model']:.2f}x", f"{p['speedup_mixer']:.2f}x") if p else ("–", "–")
        lines.append(
            f"| {v['label']} | {ur} | {v['ms_per_seq']:.3f} | {v['mixer_ms_per_seq']:.3f} "
            f"| {v['dense_ms_per_seq']:.3f} | {sp[0]} | {sp[1]} |"
        )
    lines += [
        "",
        f"Speedup = min time of the baseline row / min time of the learned gate, each timed "
        f"right after its baseline in every repetition. The {DENSE_PARTS} run dense in every "
        "case: the recurrent-layer columns time the suRNN layers alone, the dense-parts "
        "column the rest of the same pass (whole model minus recurrent layers, its minimum "
        "over the passes).",
    ]
    pub = published()
    if pub:
        lines[-1] += (
            f" Published (the paper's sMNIST suGRU, its C kernel; not a run of this harness): "
            f"{100 * pub['smnist_skipped_updates']:.0f}% of updates skipped, "
            f"{pub['c_inference_speedup']}x faster inference than dense "
            f"({pub.get('dense_ms', '?')} ms -> {pub.get('mask_aware_ms', '?')} ms)."
        )
    fc = b.get("fused_vs_eager")
    if fc is not None:
        p = next(p for p in b["pairs"] if p["baseline"] == "eager_dense")
        e, f = c["eager_dense"], c["learned"]
        agree = (
            f"; predictions equal on {fc['predictions_agree']} of {fc['of']}"
            if fc["predictions_agree"] is not None
            else ""
        )
        lines += [
            "",
            f"Dense parts fused (`surnn.harness.fused`, one C++ call per block) against eager "
            f"torch modules, the learned gate in both: the whole model {e['ms_per_seq']:.3f} -> "
            f"{f['ms_per_seq']:.3f} ms/seq ({p['speedup_model']:.2f}x), the dense parts "
            f"{e['dense_ms_per_seq']:.3f} -> {f['dense_ms_per_seq']:.3f} ms/seq "
            f"({e['dense_ms_per_seq'] / f['dense_ms_per_seq']:.2f}x); outputs within "
            f"{fc['max_abs_diff']:.1e} of eager{agree}.",
        ]
    fused = next((p for p in b["pairs"] if p["case"] == "compiled"), None)
    if fused is not None:
        e, f = c[fused["baseline"]], c["compiled"]
        lines += [
            "",
            f"torch.compile of the dense parts (the suRNN layers eager): the whole model "
            f"{e['ms_per_seq']:.3f} -> {f['ms_per_seq']:.3f} ms/seq "
            f"({fused['speedup_model']:.2f}x), the dense parts {e['dense_ms_per_seq']:.3f} -> "
            f"{f['dense_ms_per_seq']:.3f} ms/seq; outputs within "
            f"{b['compiled_max_abs_diff_vs_eager']:.1e} of eager.",
        ]
    return "\n".join(lines) + "\n"


def _recorded(b: dict) -> str:
    rec, g = b["results_json"], lambda v: "–" if v is None else f"{v:.4g}"
    if not rec.get("update_rate"):
        return "no update rate recorded (an unfinished run?)"
    rate = " / ".join(f"{v:.3f}" for v in rec["update_rate"].values())
    here = g(b["test_metrics"].get(rec["metric"]))
    return (
        f"update rate {rate} over its {rec['test_examples']} test examples, test "
        f"{rec['metric']} {g(rec['test_metric'])} (here {here} over {b['examples']})"
    )


def published() -> dict:
    """The paper's efficiency numbers (results/paper_reference.json), {} without them."""
    p = Path(__file__).resolve().parents[2] / "results" / "paper_reference.json"
    return json.loads(p.read_text()).get("efficiency", {}) if p.exists() else {}
