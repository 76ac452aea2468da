#!/usr/bin/env python
"""The surrogate study's table: accuracy from the runs, training time from the benchmark.

    python scripts/surrogate_table.py outputs/reproduce/surrogate \\
        --bench results/bench/surnn_cpu_targets_surrogate.json --out results/surrogate --copy-runs
    python scripts/surrogate_table.py results/surrogate/runs \\
        --bench results/bench/surnn_cpu_targets_surrogate.json --out results/surrogate

Reads the runs of ``scripts/reproduce.py surrogate`` (run folders with ``results.json`` and
``metrics.jsonl``, or their copies ``<run>.json`` / ``<run>.metrics.jsonl`` as
``--copy-runs`` leaves them in ``<out>/runs/``), groups them by surrogate (the run's
``variant``: ``surrogate=ste``, ``surrogate=triangle,width=0.3``) and writes
``<out>/surrogate.md`` and ``.json``: per surrogate, the test accuracy (each seed's, mean
and std), the update rate on the test set, and the fraction of updates the training steps
computed (each run's logged ``train/layer<k>/active_rate``, averaged over its log);
beside them, from the benchmark (``scripts/bench_surnn.py --suite targets --settings
surrogate``: a training step of the public layer with the presets' gate under each
surrogate, timed on a quiet machine), the step's time at the demo's layer shape and its
ratio to straight-through's at the demo's, the sMNIST presets' and the large layer's shape,
and the recurrent layers' training time over a run's steps (layers x steps x the step at
the demo's shape). The runs' own wall-clock comes from a shared machine and stays in the
JSON only. Without ``--bench`` (or with a benchmark that has no surrogate rows) the time
columns are empty and say which command fills them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from surnn.harness.results import RunResult
from surnn.harness.stats import mean_std, welch
from surnn.ops.bench_report import surrogate_rows
from surnn.ops.bench_settings import SURROGATES, surrogate_name
from surnn.provenance import command_line

ROOT = Path(__file__).resolve().parents[1]

BENCH_CMD = (
    "python scripts/bench_surnn.py --suite targets --impl compiled --threads 2 "
    "--settings surrogate --reps 15 --out results/bench/surnn_cpu_targets_surrogate.json "
    "--label 'quiet 2-core VM (nothing else running; load average recorded)'"
)
ORDER = [surrogate_name(k, w if k != "ste" else None) for k, w in SURROGATES]
SHAPES = ("demo", "smnist", "big")  # the bench's shape tags, the demo's first


def surrogate_of(variant: str | None) -> str:
    """``surrogate=triangle,width=0.3`` -> ``triangle w=0.3`` (the bench's row name)."""
    kv = dict(p.split("=", 1) for p in (variant or "").split(",") if "=" in p)
    if "surrogate" not in kv:
        raise SystemExit(
            f"error: run variant {variant!r} names no surrogate: pass the runs of "
            "scripts/reproduce.py surrogate (configs/experiment/surrogate/)"
        )
    kind = kv["surrogate"]
    width = None if kind == "ste" else float(kv.get("width", 1.0))
    return surrogate_name(kind, width)


@dataclass
class Run:
    """One run of the study: its results.json, where it was read and what it trained."""

    name: str  # the run folder's name (or the copy's stem)
    result: RunResult
    metrics: Path  # its metrics.jsonl (or the copy's <run>.metrics.jsonl)
    surrogate: str  # the bench's row name of its surrogate (surrogate_of)
    train_active: float | None  # fraction of updates its training steps computed


def find_runs(roots: list[Path]) -> list[Run]:
    """Every run below ``roots``: run folders (results.json) or copied summaries."""
    runs = []
    for root in roots:
        if not root.exists():
            raise SystemExit(f"error: run folder {root} does not exist")
        found = [(p, p.parent / "metrics.jsonl", p.parent.name) for p in root.rglob("results.json")]
        found += [
            (p, p.with_suffix(".metrics.jsonl"), p.stem)
            for p in root.rglob("*.json")
            if p.name != "results.json" and p.with_suffix(".metrics.jsonl").exists()
        ]
        for res, metrics, name in sorted(found):
            r = RunResult.load(res)
            runs.append(Run(name, r, metrics, surrogate_of(r.variant), train_active(metrics)))
    if not runs:
        raise SystemExit(f"error: no results.json under {', '.join(map(str, roots))}")
    return runs


def train_active(metrics: Path) -> float | None:
    """The fraction of updates the training steps computed: the mean over the run's log of
    the mean over layers of ``train/layer<k>/active_rate``."""
    vals = []
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            rec = json.loads(line)
            layer = [
                v for k, v in rec.items() if k.startswith("train/") and k.endswith("/active_rate")
            ]
            if layer:
                vals.append(statistics.fmean(layer))
    return statistics.fmean(vals) if vals else None


def load_bench(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    meta = json.loads(path.read_text())
    by = surrogate_rows(meta.get("rows", []))
    if not by:
        return None
    return {
        "meta": meta,
        "rows": {tag.split(" ", 1)[1]: {r["surrogate"]: r for r in rs} for tag, rs in by.items()},
    }


def _seeds(rows: list[dict]) -> str:
    """``Seeds 0, 1, 2`` when every arm ran the same seeds, else each arm's."""
    by = {r["surrogate"]: ", ".join(map(str, r["seeds"])) for r in rows}
    if len(set(by.values())) == 1:
        return f"Seeds {next(iter(by.values()))}"
    return "Seeds per arm (not every arm ran every seed): " + "; ".join(
        f"{k} {v}" for k, v in by.items()
    )


def table(runs: list[Run], bench: dict | None) -> list[dict]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.surrogate, []).append(run)
    rows = []
    for name in sorted(groups, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        arm = sorted(groups[name], key=lambda run: run.result.seed)
        rs = [run.result for run in arm]
        acc = [100 * r.test_acc for r in rs]
        rate = [statistics.fmean(r.update_rate.values()) for r in rs]
        act = [run.train_active for run in arm if run.train_active is not None]
        steps = {r.steps for r in rs}
        layers = {len(r.update_rate) for r in rs}
        row = {
            "surrogate": name,
            "seeds": [r.seed for r in rs],
            "runs": [run.name for run in arm],
            "test_acc": acc,
            "test_acc_mean": mean_std(acc)[0],
            "test_acc_std": mean_std(acc)[1],
            "best_val_acc": [100 * r.best_val_acc for r in rs],
            "test_update_rate": rate,
            "train_computed": act,
            "train_computed_mean": statistics.fmean(act) if act else None,
            "steps": steps.pop() if len(steps) == 1 else sorted(steps),
            "suRNN_layers": layers.pop() if len(layers) == 1 else sorted(layers),
            # a shared machine's timings (1 thread each, others' jobs beside): not the table's
            "shared_machine_train_time_s": [r.train_time_s for r in rs],
            "shared_machine_step_time_s": [r.step_time_s for r in rs],
            "git_commit": sorted({r.git_commit for r in rs}),
            "kernel": sorted({str(r.kernel) for r in rs}),
        }
        if bench is not None:
            for shape, by in bench["rows"].items():
                b = by.get(name)
                if b is None:
                    continue
                row[f"bench_{shape}"] = {
                    "step_min_s": b["case_min_s"],
                    "vs_ste": b["vs_ste"],
                    "vs_nn_gru": b["ratio_of_min"],
                    "computed_in_training": b["case_train_active_rate"],
                    "sizes": b["sizes"],
                }
            demo = row.get("bench_demo")
            if demo and isinstance(row["steps"], int) and isinstance(row["suRNN_layers"], int):
                row["recurrent_train_time_s"] = (
                    demo["step_min_s"] * row["steps"] * row["suRNN_layers"]
                )
        rows.append(row)
    ste = next((r for r in rows if r["surrogate"] == ORDER[0]), None)
    for row in rows:  # Welch's t-test of each surrogate's test accuracy against ste's
        if (
            ste is not None
            and row is not ste
            and min(len(row["test_acc"]), len(ste["test_acc"])) > 1
        ):
            row["welch_vs_ste"] = welch(row["test_acc"], ste["test_acc"])
    return rows


def markdown(rows: list[dict], runs: list[Run], bench: dict | None, command: str) -> str:
    """The table and how it was made (``command``: this script's command line)."""
    r0 = runs[0].result
    lines = [
        "# The surrogate gradient on the demo ListOps: accuracy and training time",
        "",
        "DEMO SCALE, not the LRA setting: `configs/experiment/surrogate/` (the demo ListOps of "
        "`configs/experiment/demo_listops.yaml`: generated, lengths 20-150 tokens, depth <= 5; "
        "20,000 / 1,000 / 1,000 examples; 2 suRNN blocks of width 64; "
        f"{rows[0]['steps']} steps of batch 64) with the gate as the LRA suRNN presets set it "
        "(learned rhythm, 4 fixed frequencies with periods 2 .. 160, the sequence length; "
        "init and target rate 0.17 held by rate control); the arms differ only in the "
        f"surrogate. {_seeds(rows)}; "
        f"{r0.threads} thread per run; kernel {', '.join(rows[0]['kernel'])}. Test majority "
        f"class {100 * r0.test_majority_class:.1f}%.",
        "",
        "Accuracy and the work computed come from the runs; time from the benchmark "
        "(a training step of one suRNN layer, `SelectiveUpdateGRU`, with the presets' gate "
        "under each surrogate, every case right after its baseline; the machine's state is "
        "in the benchmark's label below): the runs ran one at a time on a shared machine, so "
        "their wall-clock (in the JSON) is not comparable across arms.",
        "",
        "| surrogate | test acc (%) per seed | mean ± std | vs ste: Welch p "
        "| update rate (test) | computed in training | layer step, demo shape (ms) "
        "| recurrent layers' training time (s) | step vs ste: demo / sMNIST / big |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = " / ".join(f"{a:.1f}" for a in r["test_acc"])
        rate = " / ".join(f"{x:.3f}" for x in r["test_update_rate"])
        act = "–" if r["train_computed_mean"] is None else f"{r['train_computed_mean']:.3f}"
        demo = r.get("bench_demo")
        step = "–" if demo is None else f"{1e3 * demo['step_min_s']:.2f}"
        total = r.get("recurrent_train_time_s")
        total = "–" if total is None else f"{total:.1f}"
        vs = " / ".join(
            f"{r[f'bench_{s}']['vs_ste']:.2f}x" if f"bench_{s}" in r else "–" for s in SHAPES
        )
        std = r["test_acc_std"]
        spread = "(1 seed)" if std is None else f"± {std:.2f}"
        w = r.get("welch_vs_ste")
        p = "–" if w is None else f"{w['p']:.2g} ({w['diff']:+.2f})"
        lines.append(
            f"| {r['surrogate']} | {per_seed} | {r['test_acc_mean']:.2f} {spread} | {p} "
            f"| {rate} | {act} | {step} | {total} | {vs} |"
        )
    lines += [
        "",
        "- vs ste: Welch's two-sided t-test of the test accuracy per seed against "
        "straight-through's (unequal variances; p per comparison, not adjusted for the three "
        "comparisons), with the difference of the means in points; – with fewer than 2 seeds "
        "in either arm.",
        "- computed in training: the fraction of (step, neuron) updates a training step "
        "computes (straight-through: every one; the triangle of half-width w: the open ones "
        "and the closed ones with |a| < w), the mean over each run's log and over seeds.",
        "- recurrent layers' training time: the run's steps x its suRNN layers x the "
        "benchmark's training step of one layer at the demo's shape (B=64, D=H=64, padded "
        "lengths 20..150); the embedding, feed-forward, norms, head and optimizer are "
        "left out (the same work under every surrogate).",
        "- step vs ste: straight-through's training step time / this surrogate's, from the "
        "benchmark at three layer shapes: the demo's; the sMNIST presets' (B=50, T=784, "
        "D=H=256); B=32, T=1024, D=H=512.",
    ]
    if bench is None:
        lines += [
            "",
            "**No benchmark yet**: the time columns are empty. They come from "
            f"`{BENCH_CMD}` on a quiet machine, then this table's command again.",
        ]
    else:
        m = bench["meta"]
        lb, la = m["loadavg_before_after"][0][0], m["loadavg_before_after"][1][0]
        lines += [
            "",
            "## The benchmark",
            "",
            f"`{m['command']}`: {m['device']}, {m['threads']} threads, impl={m['impl']}, "
            f"commit {m['commit']}, {m['date']}, {m['reps']} repetitions, 1-minute load "
            f"average {lb:.2f} before, {la:.2f} after. {m['label']}".rstrip(),
        ]
        if max(lb, la) > m["threads"] + 0.5:
            lines += [
                "",
                f"**Warning: the load average ({max(lb, la):.2f}) exceeds the benchmark's "
                f"{m['threads']} threads: it did not run on a quiet machine; rerun `{BENCH_CMD}`.**",
            ]
        lines += [
            "",
            "| shape | B | T | D=H | surrogate | computed in training (at the gate's init) "
            "| step min (s) | vs nn.GRU | vs ste |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for shape in SHAPES:
            for name, b in bench["rows"].get(shape, {}).items():
                z = b["sizes"]
                lines.append(
                    f"| {shape} | {z['B']} | {z['T']} | {z['H']} | {name} "
                    f"| {b['case_train_active_rate']:.3f} | {b['case_min_s']:.4f} "
                    f"| {b['ratio_of_min']:.2f}x | {b['vs_ste']:.2f}x |"
                )
    commits = sorted({c for r in rows for c in r["git_commit"]})
    lines += [
        "",
        "## How this table was made",
        "",
        "```",
        "python scripts/reproduce.py surrogate",
        _rel(r0.command),
        _rel(command),
        "```",
        "",
        f"Runs at commit {', '.join(c[:12] for c in commits)}; each run's results.json and "
        "metrics.jsonl are in `runs/`.",
    ]
    return "\n".join(lines) + "\n"


def _rel(cmd: str) -> str:
    """The command as typed in the repository (older runs recorded run.py's absolute path,
    which names the machine's working tree, not anything a reader has)."""
    return re.sub(r"(?<=python )\S+/(?=run\.py\b)", "", cmd.replace(str(ROOT) + "/", ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path, help="run folders or copied summaries")
    ap.add_argument("--bench", type=Path, default=None, help="the surrogate benchmark's JSON")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "surrogate")
    ap.add_argument("--name", default="surrogate")
    ap.add_argument(
        "--copy-runs", action="store_true", help="copy each run's summary into <out>/runs/"
    )
    args = ap.parse_args(argv)
    runs = find_runs(args.roots)
    bench = load_bench(args.bench)
    if args.bench is not None and bench is None:
        print(f"note: {args.bench} has no surrogate rows (not run yet?): time columns empty")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.copy_runs:
        dest = args.out / "runs"
        dest.mkdir(exist_ok=True)
        for run in runs:  # a summary already in <out>/runs/ (a root may be it) stays as it is
            for src, dst in (
                (run.result.path, dest / f"{run.name}.json"),
                (run.metrics, dest / f"{run.name}.metrics.jsonl"),
            ):
                if src.exists() and not (dst.exists() and dst.samefile(src)):
                    shutil.copyfile(src, dst)
    rows = table(runs, bench)
    command = command_line(__file__, None if argv is None else [str(a) for a in argv])
    md = markdown(rows, runs, bench, command)
    (args.out / f"{args.name}.md").write_text(md)
    payload = {
        "title": "The surrogate gradient on the demo ListOps: accuracy and training time",
        "setting": "demo ListOps (configs/experiment/surrogate/), NOT the LRA setting",
        "rows": rows,
        "bench": None if bench is None else {k: v for k, v in bench["meta"].items() if k != "rows"},
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(md + f"wrote {args.out / args.name}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
