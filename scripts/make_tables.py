#!/usr/bin/env python
"""Regenerate the paper's tables from run folders.

    python scripts/make_tables.py outputs/ [more run roots ...] [--out results/tables]

Every ``results.json`` under the given folders is one run. Runs are grouped by (task,
model, variant): an ablation run (``variant``, by default its model.* overrides, e.g.
``surnn [gate.kind=soft]``) gets its own row; each cell is the mean test accuracy (at the best validation step) with its
standard deviation and the number of seeds. Published numbers are shown beside, labelled
as the papers'. Writes ``lra.md`` and ``lra.json`` (and prints the Markdown).
``--efficiency PATH...``: an efficiency table from scripts/bench_checkpoint.py JSONs (files or
folders), beside the paper's published 83% skipped / 5.3x (results/paper_reference.json).
``--gpu PATH...``: the per-step timings table of scripts/gpu_check.sh JSONs (kind "gpu_check").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surnn.harness.paper_tables import TITLE, aggregate, render, render_latex
from surnn.harness.results import RunResult

ROOT = Path(__file__).resolve().parents[1]


def find_runs(roots: list[Path]) -> list[RunResult]:
    runs = []
    for root in roots:
        if not root.exists():
            raise SystemExit(
                f"error: run folder {root} does not exist; pass the folder runs write to (default outputs/)"
            )
        for p in sorted(root.rglob("results.json")):
            try:
                r = RunResult.load(p)
            except json.JSONDecodeError as e:
                raise SystemExit(
                    f"error: {p} is not valid JSON ({e}); rerun that run or delete the file"
                ) from None
            if (r.objective or "classify") != "classify":
                continue  # memory and language runs: results/memory/ has their own scripts
            missing = [k for k in ("task", "model", "seed", "test_acc") if not r.has(k)]
            if missing:
                raise SystemExit(
                    f"error: {p} lacks {', '.join(missing)}; it was not written by run.py"
                )
            runs.append(r)
    return runs


def find_benches(paths: list[Path]) -> list[dict]:
    """scripts/bench_checkpoint.py JSONs: the files given, and those below given folders."""
    files = [f for p in paths for f in (sorted(p.rglob("*.json")) if p.is_dir() else [p])]
    try:
        out = [json.loads(f.read_text()) for f in files if f.exists()]
    except json.JSONDecodeError as e:
        raise SystemExit(
            f"error: a file in {', '.join(map(str, paths))} is not JSON ({e})"
        ) from None
    out = [b for b in out if isinstance(b, dict) and b.get("kind") == "checkpoint_efficiency"]
    if not out:
        raise SystemExit(
            f"error: no scripts/bench_checkpoint.py JSON in {', '.join(map(str, paths))}; "
            "run python scripts/bench_checkpoint.py RUN_DIR first"
        )
    return out


def find_gpu_checks(paths: list[Path]) -> list[dict]:
    """scripts/gpu_check.sh JSONs (kind "gpu_check"): the files given, and those below folders."""
    files = [f for p in paths for f in (sorted(p.rglob("*.json")) if p.is_dir() else [p])]
    out = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: {f} is not readable JSON ({e})") from None
        if isinstance(d, dict) and d.get("kind") == "gpu_check":
            out.append(d)
    if not out:
        raise SystemExit(
            f"error: no scripts/gpu_check.sh JSON in {', '.join(map(str, paths))}; "
            "run bash scripts/gpu_check.sh on a GPU machine first"
        )
    return out


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
    ap.add_argument(
        "--setting",
        default=None,
        help="name every run's setting (e.g. 'mini scale'): its tables carry that name and no "
        "published numbers; default: detected per run (standard, demo, smoke, ...)",
    )
    ap.add_argument("--name", default="lra", help="file stem of the outputs (lra -> lra.md)")
    ap.add_argument(
        "--efficiency",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="scripts/bench_checkpoint.py JSONs (files or folders): an efficiency table "
        "beside the paper's published 83%% skipped / 5.3x",
    )
    ap.add_argument(
        "--gpu",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="scripts/gpu_check.sh JSONs (files or folders): the GPU per-step timings table",
    )
    args = ap.parse_args(argv)
    runs = find_runs(args.roots)
    if not runs:
        print(
            f"error: no results.json under {', '.join(map(str, args.roots))}; train with run.py first",
            file=sys.stderr,
        )
        return 2
    cells = aggregate(runs, args.setting)
    paper = {} if args.no_paper or not args.paper.exists() else json.loads(args.paper.read_text())
    eff = find_benches(args.efficiency) if args.efficiency else []
    gpu = find_gpu_checks(args.gpu) if args.gpu else []
    md = render(cells, paper, args.title, eff, gpu)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(md)
    (args.out / f"{args.name}.tex").write_text(render_latex(cells, paper, args.title, eff, gpu))
    key = {k: "/".join(p for p in k[1:]) if k[0] is None else "/".join(k) for k in cells}
    (args.out / f"{args.name}.json").write_text(
        json.dumps({key[k]: c for k, c in cells.items()}, indent=2) + "\n"
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
