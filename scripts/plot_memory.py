#!/usr/bin/env python
"""Tables and figures of the memory study (scripts/reproduce.py memory, memory-offset,
memory-long, memory-selective) from its run folders.

    python scripts/plot_memory.py outputs/reproduce/memory --out results/memory --name memory

Reads every run folder below the roots (``results.json`` + ``metrics.jsonl``), groups them
by setting (task; copy memory's delay, offset and step budget; selective copy's length) and
arm (model and ``variant``: the gate initialisation; a ``model.*`` override on a run's
command line, e.g. ``model.options.gate.rate_min=0.000245``, is part of its arm's name, so
such runs never pool with the preset's), and writes into ``--out``:

- ``<name>.md`` / ``<name>.json``: per setting and arm, the test accuracy per symbol (mean
  +- std over seeds, and each seed's), the accuracy at each recall position (mean over
  seeds: which symbols are recalled), whole-sequence accuracy, the update rate, the holding
  neurons at the end (open at the input, closed through the delay: ``gate_holders``), the
  median step time; then what each trained gate can hold (``gate_stats``);
- ``<name>-curves.png``: validation accuracy against the step, one panel per setting, mean
  over seeds with the min-max band, one line per arm;
- ``<name>-holders.png``: the holding neurons of every suRNN arm against the step (the
  evaluation counts them on the validation gate every ``eval_every`` steps);
- ``<name>-raster.png`` / ``.json``: the trained gate of one run (``--raster RUN``, default
  the suRNN run with a generic gate, learned or frozen, not the hand-set one, with the best
  test accuracy at the longest delay), neurons x time
  over one sequence, white = update, the holding neurons marked;
- a comparison of every two arms of a setting that have at least 2 seeds each: the
  difference of their mean test metric and Welch's t-test (two-sided; unequal variances);
  with ``--against OTHER.json`` also each arm against another table's arms of its setting;
- ``<name>-gate_stats.json``: for every trained suRNN run, each layer's longest closed
  stretch per neuron and (copy memory) the neurons open at the input and closed through the
  delay (``surnn.harness.trained_gates``);
- ``runs/<name>/<run>.json`` and ``<run>.metrics.jsonl``: every run's results.json (its
  command, commit and thread count: ``scripts/check_results.py results/memory/runs/<name>``
  reruns them) and its metrics log, so the committed table keeps its evidence.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from surnn.harness.cli import variant_from_overrides
from surnn.harness.results import RunResult
from surnn.harness.stats import mean_std, welch
from surnn.harness.trained_gates import gate_stats, holding, stats_table, trained_gates

#: arms whose gate is told where the symbols are (excluded from the default raster)
TOLD_LAYOUT = ("handset",)


@dataclass
class Run:
    """One run folder: its results.json and, from its metrics.jsonl, (step, value) series of
    the validation metric and of layer 0's holders and late holders."""

    res: RunResult
    curve: list[tuple[int, float]] = field(default_factory=list)
    holders: list[tuple[int, float]] = field(default_factory=list)
    late: list[tuple[int, float]] = field(default_factory=list)
    name: str = ""  # the run's name in the tables and runs/<table>/ (its folder's, made unique)

    @property
    def dir(self) -> Path:
        return self.res.run_dir


def find_runs(roots: list[Path]) -> list[Run]:
    runs = []
    for root in roots:
        if not root.exists():
            raise SystemExit(f"error: run folder {root} does not exist")
        for p in sorted(root.rglob("results.json")):
            r = Run(RunResult.load(p))
            if (r.res.objective or "classify") == "classify":
                continue
            mfile = p.parent / "metrics.jsonl"
            if mfile.exists():
                key = f"val/{r.res.metric_name}"
                for line in mfile.read_text().splitlines():
                    rec = json.loads(line)
                    if key in rec:
                        r.curve.append((rec["step"], rec[key]))
                    if "val/layer0/holders" in rec:
                        r.holders.append((rec["step"], rec["val/layer0/holders"]))
                    if "val/layer0/late_holders" in rec:
                        r.late.append((rec["step"], rec["val/layer0/late_holders"]))
            runs.append(r)
    if not runs:
        raise SystemExit(f"error: no memory/LM results.json under {', '.join(map(str, roots))}")
    folders = [r.dir.name for r in runs]
    for r in runs:  # two roots may hold folders of one name: prefix those with their parent's
        clash = folders.count(r.dir.name) > 1
        r.name = f"{r.dir.parent.name}-{r.dir.name}" if clash else r.dir.name
    return runs


def model_overrides(r: RunResult) -> str | None:
    """The ``model.*`` overrides on the run's command line, as run.py names a variant
    (``gate.rate_min=0.000245`` for ``model.options.gate.rate_min=0.000245``): what the run
    changed beyond its preset."""
    cmd = r.command or ""
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    return variant_from_overrides(words)


def label(r: RunResult) -> str:
    v, extra = r.variant, model_overrides(r)
    parts = ([v] if v and v != "none" else []) + ([extra] if extra else [])
    return f"{r.model} [{', '.join(parts)}]" if parts else r.model


def _options(r: RunResult) -> dict:
    return (r.data or {}).get("options") or {}


def setting(r: RunResult) -> str:
    """The task and the options that make runs comparable, in words."""
    o = _options(r)
    if r.task == "copy_memory":
        s = f"copy memory, delay {o.get('delay')}"
        if o.get("offset"):
            s += f", offset < {o['offset']}"
        return s + f", {r.steps} steps"
    if r.task == "selective_copy":
        return (
            f"selective copy, length {o.get('length')}, {o.get('n_tokens')} of "
            f"{o.get('vocab')} symbols, {r.steps} steps"
        )
    return f"{r.task}, {r.steps} steps"


def _ms(xs: list[float]) -> tuple[float, float]:
    """Mean and std of the values a run recorded (0 spread from one; nan from none)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    m, s = mean_std(xs)
    return m, (0.0 if s is None else s)


def _positions(r: RunResult) -> list[float]:
    m = r.test_metrics
    return [m[f"acc_pos{k}"] for k in range(64) if f"acc_pos{k}" in m]


def grouped(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    by: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        by[(setting(r.res), label(r.res))].append(r)
    return dict(sorted(by.items()))


def table(runs: list[Run]) -> tuple[str, list[dict]]:
    rows = []
    for (where, arm), group in grouped(runs).items():
        group = sorted(group, key=lambda r: r.res.seed)
        rs = [r.res for r in group]
        metric = rs[0].metric_name
        vals = [r.test_metrics.get(metric) for r in rs]
        m, s = _ms(vals)
        sm, ss = _ms([r.test_metrics.get("seq_acc") for r in rs])
        pos = [_positions(r) for r in rs]
        pos_mean = [statistics.fmean(p[k] for p in pos) for k in range(min(map(len, pos)))]
        rates = [statistics.fmean(r.update_rate.values()) for r in rs if r.update_rate]
        holders = [sum(r.gate_holders.values()) for r in rs if r.gate_holders is not None]
        rows.append(
            {
                "setting": where,
                "task": rs[0].task,
                "arm": arm,
                "seeds": [r.seed for r in rs],
                "metric": metric,
                "test": vals,
                "test_mean": m,
                "test_std": s,
                "seq_acc_mean": sm,
                "seq_acc_std": ss,
                "acc_by_position": pos_mean,
                "update_rate": statistics.fmean(rates) if rates else None,
                "holders": holders or None,
                "step_time_s": statistics.median(r.step_time_s for r in rs),
                "train_h": statistics.fmean(r.train_time_s for r in rs) / 3600,
                "git_commit": sorted({r.git_commit for r in rs}),
                "runs": [r.name for r in group],
            }
        )
    lines = []
    for where in dict.fromkeys(w["setting"] for w in rows):
        lines += [
            f"### {where}",
            "",
            "| arm | seeds | test acc per symbol (%) | per seed | by recall position (%) | "
            "whole sequence (%) | update rate | holders | s/step |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for w in (w for w in rows if w["setting"] == where):
            f = 100 if w["metric"] == "acc" else 1
            val = f"{f * w['test_mean']:.1f} ± {f * w['test_std']:.1f}"
            each = " / ".join(f"{f * v:.1f}" for v in w["test"])
            pos = " ".join(f"{100 * p:.0f}" for p in w["acc_by_position"])
            seq = f"{100 * w['seq_acc_mean']:.1f}" if w["seq_acc_mean"] == w["seq_acc_mean"] else ""
            rate = "dense" if w["update_rate"] is None else f"{w['update_rate']:.3f}"
            held = "" if w["holders"] is None else " / ".join(map(str, w["holders"]))
            lines.append(
                f"| {w['arm']} | {len(w['seeds'])} | {val} | {each} | {pos} | {seq} | {rate} | "
                f"{held} | {w['step_time_s']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines), rows


def comparisons(rows: list[dict], against: list[dict] = ()) -> tuple[str, list[dict]]:
    """Every two arms of a setting with at least 2 seeds each: Welch's t-test on the test
    metric (the table's rows; ``test`` holds one value per seed). ``against``: the rows of
    another table (its ``<name>.json``); each of this table's arms is also compared with
    each of its arms of the same setting, named ``<arm> (<table>)``."""
    out = []
    for where in dict.fromkeys(w["setting"] for w in rows):
        arms = [w for w in rows if w["setting"] == where and len(w["test"]) >= 2]
        other = [w for w in against if w["setting"] == where and len(w["test"]) >= 2]
        for i, x in enumerate(arms):
            for y in arms[i + 1 :] + other:
                w = welch(x["test"], y["test"])
                out.append(
                    {
                        "setting": where,
                        "a": x["arm"],
                        "b": y["arm"],
                        "seeds": [len(x["test"]), len(y["test"])],
                        **w,
                    }
                )
    if not out:
        return "", out
    lines = [
        "### Comparisons (Welch's t-test, two-sided, on the test metric per seed)",
        "",
        "Every pair of arms with at least 2 seeds; p is per comparison, not adjusted for the "
        "number of comparisons in this table.",
        "",
        "| setting | arm a | arm b | seeds a / b | mean a - b (points) | t | df | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in out:
        f = 100 if next(w for w in rows if w["arm"] == c["a"])["metric"] == "acc" else 1
        lines.append(
            f"| {c['setting']} | {c['a']} | {c['b']} | {c['seeds'][0]} / {c['seeds'][1]} | "
            f"{f * c['diff']:+.1f} | {c['t']:.2f} | {c['df']:.1f} | {c['p']:.3g} |"
        )
    return "\n".join(lines) + "\n", out


def _panels(
    runs: list[Run],
    key: str,
    ylabel: str,
    path: Path,
    only_gated: bool = False,
    dashed: str | None = None,
):
    """One panel per setting, one line per arm (mean over seeds, min-max band); ``dashed``:
    a second series of the same runs drawn dashed in the arm's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped([r for r in runs if getattr(r, key) or not only_gated])
    settings = list(dict.fromkeys(w for w, _ in groups))
    if not settings:
        return False
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4.2), squeeze=False)
    for ax, where in zip(axes[0], settings):
        for (w, arm), rs in groups.items():
            if w != where or not any(getattr(r, key) for r in rs):
                continue
            steps = sorted({s for r in rs for s, _ in getattr(r, key)})
            ys = [[dict(getattr(r, key)).get(s) for r in rs] for s in steps]
            ys = [[v for v in y if v is not None] for y in ys]
            mean = [statistics.fmean(y) for y in ys]
            (line,) = ax.plot(steps, mean, label=f"{arm} ({len(rs)} seeds)")
            ax.fill_between(
                steps, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.2
            )
            if dashed and any(getattr(r, dashed) for r in rs):
                ds = sorted({s for r in rs for s, _ in getattr(r, dashed)})
                dm = [
                    statistics.fmean(
                        v for r in rs if (v := dict(getattr(r, dashed)).get(s)) is not None
                    )
                    for s in ds
                ]
                ax.plot(ds, dm, ls="--", color=line.get_color())
        ax.set_title(where, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def gate_raster(run_dir: Path, path: Path) -> dict:
    """The trained gates of a suRNN run (best checkpoint) over one sequence of its task,
    the holding neurons marked on the left: red, open at the input and closed through the
    whole delay; orange, the others closed through its last 90%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, ckpt, gates = trained_gates(run_dir)
    fig, axes = plt.subplots(len(gates), 1, figsize=(12, 3.2 * len(gates)), squeeze=False)
    marks = []
    if task.name == "copy_memory":
        marks = [task.memory_windows["hold"][0], task.n_copy + task.delay]
    elif task.name == "selective_copy":
        marks = [task.length]
    info = {}
    for ax, (i, g) in zip(axes[:, 0], gates):
        ax.imshow(g.T, aspect="auto", cmap="gray", interpolation="nearest")
        for m in marks:
            ax.axvline(m - 0.5, color="red", lw=0.8)
        held = holding(task, g > 0)
        rows = [] if held is None else [int(h) for h in held.nonzero()[0]]
        late = holding(task, g > 0, late=True)
        late_rows = [] if late is None else [int(h) for h in late.nonzero()[0] if h not in rows]
        for h in rows:
            ax.plot([-0.01 * g.shape[0]], [h], marker=">", color="red", ms=4, clip_on=False)
        for h in late_rows:
            ax.plot([-0.01 * g.shape[0]], [h], marker=">", color="orange", ms=4, clip_on=False)
        rate = float(g.mean())
        info[f"layer{i}"] = {
            "update_rate": rate,
            "never_open": int((g.sum(0) == 0).sum()),
            "always_open": int((g.sum(0) == g.shape[0]).sum()),
            "holders": rows,
            "late_holders": late_rows,
        }
        title = f"{run_dir.name}: layer {i} gate (white = update), rate {rate:.3f}"
        if marks:
            title += "; red lines: the symbols end, the recall cue"
        if held is not None:
            title += (
                f"; ticks: {len(rows)} holding through the delay (red), {len(late_rows)} more"
                " through its last 90% (orange)"
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("neuron")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"run": str(run_dir), "checkpoint": ckpt.name, **info}


def default_raster(runs: list[Run]) -> Path | None:
    """The suRNN run with the best test metric at the longest delay (or length) among those
    whose gate is generic (learned or frozen at its initialisation; not the hand-set gate,
    which is told where the symbols are)."""
    su = [r.res for r in runs if r.res.model == "surnn" and r.res.variant not in TOLD_LAYOUT]
    if not su:
        return None

    def size(r: RunResult) -> int:
        o = _options(r)
        return o.get("delay") or o.get("length") or 0

    longest = max(map(size, su))
    best = max((r for r in su if size(r) == longest), key=lambda r: r.test_metrics["acc"])
    return best.run_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="run folders (searched recursively)")
    ap.add_argument("--out", type=Path, default=Path("results/memory"))
    ap.add_argument("--name", default="memory", help="prefix of the files written")
    ap.add_argument(
        "--against",
        type=Path,
        default=None,
        help="another table's JSON (e.g. results/memory/memory.json): compare this table's "
        "arms with its arms of the same setting",
    )
    ap.add_argument(
        "--raster",
        type=Path,
        default=None,
        help="suRNN run folder for the gate raster (default: the best one with a generic gate)",
    )
    args = ap.parse_args(argv)
    runs = find_runs(args.roots)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / args.name
    md, rows = table(runs)
    against = []
    if args.against is not None:
        name = args.against.stem
        against = [
            {**w, "arm": f"{w['arm']} ({name})"} for w in json.loads(args.against.read_text())
        ]
    cmp_md, cmp_rows = comparisons(rows, against)
    if cmp_md:
        md += "\n" + cmp_md
    _panels(runs, "curve", "validation accuracy", Path(f"{out}-curves.png"))
    _panels(
        runs,
        "holders",
        "holders (solid), late holders (dashed)",
        Path(f"{out}-holders.png"),
        only_gated=True,
        dashed="late",
    )
    raster = args.raster or default_raster(runs)
    if raster is not None:
        info = gate_raster(Path(raster), Path(f"{out}-raster.png"))
        Path(f"{out}-raster.json").write_text(json.dumps(info, indent=2) + "\n")
    stats = [{"name": r.name, **gate_stats(r.dir)} for r in runs if r.res.model == "surnn"]
    if stats:
        Path(f"{out}-gate_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        md += "\n" + stats_table(stats)
    (args.out / f"{args.name}.md").write_text(md)
    keep = args.out / "runs" / args.name
    keep.mkdir(parents=True, exist_ok=True)
    for r in runs:
        d = r.dir
        (keep / f"{r.name}.json").write_text((d / "results.json").read_text())
        if (d / "metrics.jsonl").exists():
            (keep / f"{r.name}.metrics.jsonl").write_text((d / "metrics.jsonl").read_text())
    if cmp_rows:
        Path(f"{out}-comparisons.json").write_text(json.dumps(cmp_rows, indent=2) + "\n")
    (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
