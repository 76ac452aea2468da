#!/usr/bin/env python
"""Regenerate the paper's tables from run folders.

    python scripts/make_tables.py outputs/ [more run roots ...] [--out results/tables]

Every ``results.json`` under the given folders is one run. Runs are grouped by (task,
model, variant): an ablation run (``variant``, by default its model.* overrides, e.g.
``surnn [gate.kind=soft]``) gets its own row; each cell is the mean test accuracy (at the best validation step) with its
standard deviation and the number of seeds. Published numbers are shown beside, labelled
as the papers'. Writes ``lra.md`` and ``lra.json`` (and prints the Markdown).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LRA_TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
AVG_TASKS = LRA_TASKS[:5]  # the LRA average leaves Path-X out
PIXEL_TASKS = ["smnist", "psmnist", "scifar"]  # the paper's pixel-level table
TITLE = "Long Range Arena: test accuracy (%) at the best validation step"


def find_runs(roots: list[Path]) -> list[dict]:
    runs = []
    for root in roots:
        if not root.exists():
            raise SystemExit(
                f"error: run folder {root} does not exist; pass the folder runs write to (default outputs/)"
            )
        for p in sorted(root.rglob("results.json")):
            try:
                r = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise SystemExit(
                    f"error: {p} is not valid JSON ({e}); rerun that run or delete the file"
                ) from None
            if r.get("objective", "classify") != "classify":
                continue  # memory and language runs: results/memory/ has their own scripts
            missing = [k for k in ("task", "model", "seed", "test_acc") if k not in r]
            if missing:
                raise SystemExit(
                    f"error: {p} lacks {', '.join(missing)}; it was not written by run.py"
                )
            r["_path"] = str(p.parent)
            runs.append(r)
    return runs


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def label(r: dict) -> str:
    """Row label: the model, and its variant (an ablation) when the run has one."""
    v = r.get("variant")
    return f"{r['model']} [{v}]" if v else r["model"]


def aggregate(runs: list[dict]) -> dict:
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in runs:
        by[(r["task"], label(r))].append(r)
    cells = {}
    for (task, model), rs in sorted(by.items()):
        seeds = sorted({r["seed"] for r in rs})
        if len(seeds) != len(rs):
            raise SystemExit(
                f"error: {len(rs)} runs of task={task} model={model} share seeds {seeds}: "
                "pass one run folder per seed (e.g. the sweep folder of one experiment), or "
                "tell variants apart with variant=<label> on their command lines"
            )
        acc = [100 * r["test_acc"] for r in rs]
        m, s = mean_std(acc)
        cells[(task, model)] = {
            "task": task,
            "model": model,
            "variant": rs[0].get("variant"),
            "test_acc_mean": m,
            "test_acc_std": s,
            "n_seeds": len(rs),
            "seeds": seeds,
            "best_val_acc_mean": 100 * statistics.fmean(r["best_val_acc"] for r in rs),
            "majority_class": 100 * rs[0].get("test_majority_class", float("nan")),
            "params": rs[0].get("params"),
            "flops_per_seq": statistics.fmean(r.get("flops_per_seq") or 0 for r in rs),
            "flops_per_seq_dense": statistics.fmean(r.get("flops_per_seq_dense") or 0 for r in rs),
            "update_rate": _mean_rate(rs),
            "step_time_s": statistics.fmean(r.get("step_time_s") or 0 for r in rs),
            "tokens_per_s": statistics.fmean(r.get("tokens_per_s") or 0 for r in rs),
            "devices": sorted({r.get("device", "?") for r in rs}),
            "commits": sorted({r.get("git_commit", "?") for r in rs}),
            "data": rs[0].get("data", {}),
            "runs": [r["_path"] for r in rs],
        }
    return cells


def _mean_rate(rs: list[dict]) -> float | None:
    vals = [statistics.fmean(r["update_rate"].values()) for r in rs if r.get("update_rate")]
    return statistics.fmean(vals) if vals else None


def fmt_cell(c: dict | None) -> str:
    if c is None:
        return "–"
    s = f"{c['test_acc_mean']:.2f}"
    if c["n_seeds"] > 1:
        s += f" ± {c['test_acc_std']:.2f}"
    return s + f" ({c['n_seeds']})"


def _acc_table(cells: dict, tasks: list[str], avg_tasks: list[str]) -> list[str]:
    models = sorted({m for t, m in cells if t in tasks})
    avg = bool(avg_tasks)
    lines = ["| Model | " + " | ".join(tasks) + (" | Avg |" if avg else " |")]
    lines.append("|---" * (len(tasks) + 1 + avg) + "|")
    for m in models:
        row = [fmt_cell(cells.get((t, m))) for t in tasks]
        if avg:
            have = [cells[(t, m)]["test_acc_mean"] for t in avg_tasks if (t, m) in cells]
            a = f"{statistics.fmean(have):.2f}" if len(have) == len(avg_tasks) else "–"
            row.append(a)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _paper_table(rows: dict, tasks: list[str], avg: bool) -> list[str]:
    lines = ["", "Published numbers (the papers', not runs of this harness):", ""]
    lines.append("| Model | " + " | ".join(tasks) + (" | Avg |" if avg else " |"))
    lines.append("|---" * (len(tasks) + 1 + avg) + "|")
    for name, row in rows.items():
        vals = [str(row.get(t, "–")) for t in tasks] + ([str(row.get("avg", "–"))] if avg else [])
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return lines


def render(cells: dict, paper: dict, title: str = TITLE) -> str:
    have = {t for t, _ in cells}
    pixel = [t for t in PIXEL_TASKS if t in have]
    other = sorted(have - set(LRA_TASKS) - set(PIXEL_TASKS))
    lines = [f"# {title}", ""]
    lines.append(
        "Runs of this harness: mean ± std over seeds (number of seeds). Avg over the "
        "five LRA tasks without Path-X, shown only when all five are present. A model "
        "with a variant in brackets is an ablation (its model.* options or variant=)."
    )
    lines.append("")
    if have & set(LRA_TASKS) or not (pixel or other):
        tasks = [t for t in LRA_TASKS if t in have] or LRA_TASKS
        lines += _acc_table(cells, tasks, AVG_TASKS)
        if paper.get("lra"):
            lines += _paper_table(paper["lra"], LRA_TASKS, avg=True)
        if paper.get("ablation_gate"):
            g = paper["ablation_gate"]
            lines += ["", "Gate ablation (the paper's, LRA average): " + ", ".join(
                f"{k} {v}" for k, v in g.items()) + "."]  # fmt: skip
    if pixel:
        lines += ["", "## Pixel-level benchmarks", ""]
        lines += _acc_table(cells, pixel, [])
        if paper.get("pixel"):
            lines += _paper_table(paper["pixel"], PIXEL_TASKS, avg=False)
    if other:
        lines += ["", "## Other tasks", ""]
        lines += _acc_table(cells, other, [])
    lines.append("")
    lines.append("## Cost and sparsity")
    lines.append("")
    lines.append(
        "| Task | Model | Params | GFLOPs/seq (executed) | GFLOPs/seq (dense) | Update rate | Step time (s) | Tokens/s | Majority class (%) | Device |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for (t, m), c in sorted(cells.items()):
        rate = f"{c['update_rate']:.3f}" if c["update_rate"] is not None else "–"
        lines.append(
            f"| {t} | {m} | {c['params']:,} | {c['flops_per_seq'] / 1e9:.4g} | {c['flops_per_seq_dense'] / 1e9:.4g} | "
            f"{rate} | {c['step_time_s']:.4g} | {c['tokens_per_s']:.4g} | {c['majority_class']:.1f} | {'; '.join(c['devices'])} |"
        )
    lines.append("")
    lines.append("## Provenance")
    lines.append("")
    for (t, m), c in sorted(cells.items()):
        lines.append(
            f"- {t} / {m}: seeds {c['seeds']}, commits {', '.join(c['commits'])}, runs: {', '.join(c['runs'])}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "roots", nargs="*", type=Path, default=[Path("outputs")], help="folders holding run folders"
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "results" / "tables", help="where lra.md / lra.json go"
    )
    ap.add_argument("--paper", type=Path, default=ROOT / "results" / "paper_reference.json")
    ap.add_argument("--no-paper", action="store_true", help="leave the published numbers out")
    ap.add_argument("--title", default=TITLE)
    args = ap.parse_args(argv)
    runs = find_runs(args.roots)
    if not runs:
        print(
            f"error: no results.json under {', '.join(map(str, args.roots))}; train with run.py first",
            file=sys.stderr,
        )
        return 2
    cells = aggregate(runs)
    paper = {} if args.no_paper or not args.paper.exists() else json.loads(args.paper.read_text())
    md = render(cells, paper, args.title)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lra.md").write_text(md)
    (args.out / "lra.json").write_text(
        json.dumps({f"{t}/{m}": c for (t, m), c in cells.items()}, indent=2) + "\n"
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
