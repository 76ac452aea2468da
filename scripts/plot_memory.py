#!/usr/bin/env python
"""Learning curves, a results table and the gate raster of a trained suRNN for the memory
evidence (scripts/memory_evidence.sh).

    python scripts/plot_memory.py outputs/memory [more run roots] --out results/memory \
        [--raster outputs/memory/memory-copy_memory-surnn-s0]

Reads every run folder below the roots (``results.json`` + ``metrics.jsonl``) and writes
into ``--out``:
- ``curves.png``: the selection metric on validation against the step, per task (one panel
  each), mean over seeds with the min-max band, one line per model (and variant);
- ``memory.md`` / ``memory.json``: per task and model, the test metric (mean +- std over
  seeds, seed count), whole-sequence accuracy, mean update rate, steps and train time;
- ``gate_raster.png`` (with ``--raster RUN``, default: the first suRNN run of seed 0): the
  trained gate of each suRNN layer at the best checkpoint, neurons x time over one
  sequence of the task (white = open), with the task's cue positions marked;
- ``gate_stats.json`` and a section of ``memory.md``: for every trained suRNN, each layer's
  longest closed stretch per neuron and, for copy memory, how many neurons are open at the
  input and then closed through the whole delay (what holds a symbol exactly).
A run is labelled with its model and variant (the command line's model.* overrides).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def find_runs(roots: list[Path]) -> list[dict]:
    runs = []
    for root in roots:
        if not root.exists():
            raise SystemExit(f"error: run folder {root} does not exist")
        for p in sorted(root.rglob("results.json")):
            r = json.loads(p.read_text())
            if r.get("objective", "classify") == "classify":
                continue
            r["_dir"] = p.parent
            curve = []
            mfile = p.parent / "metrics.jsonl"
            if mfile.exists():
                key = f"val/{r['metric_name']}"
                for line in mfile.read_text().splitlines():
                    rec = json.loads(line)
                    if key in rec:
                        curve.append((rec["step"], rec[key]))
            r["_curve"] = curve
            runs.append(r)
    if not runs:
        raise SystemExit(f"error: no memory/LM results.json under {', '.join(map(str, roots))}")
    return runs


def label(r: dict) -> str:
    return f"{r['model']} [{r['variant']}]" if r.get("variant") else r["model"]


def _ms(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def table(runs: list[dict]) -> tuple[str, list[dict]]:
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in runs:
        by[(r["task"], label(r))].append(r)
    rows = []
    for (task, model), rs in sorted(by.items()):
        metric = rs[0]["metric_name"]
        m, s = _ms([r["test_metrics"].get(metric) for r in rs])
        sm, ss = _ms([r["test_metrics"].get("seq_acc") for r in rs])
        rates = [statistics.fmean(r["update_rate"].values()) for r in rs if r.get("update_rate")]
        rows.append(
            {
                "task": task,
                "model": model,
                "seeds": sorted(r["seed"] for r in rs),
                "metric": metric,
                "test_mean": m,
                "test_std": s,
                "seq_acc_mean": sm,
                "seq_acc_std": ss,
                "update_rate": statistics.fmean(rates) if rates else None,
                "steps": sorted({r["steps"] for r in rs}),
                "train_h": statistics.fmean(r["train_time_s"] for r in rs) / 3600,
                "data": rs[0]["data"].get("options"),
            }
        )
    lines = [
        "| task | model | seeds | test metric | whole-sequence acc | update rate | steps | "
        "train h/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in rows:
        pct = w["metric"] == "acc"
        f = 100 if pct else 1
        val = f"{w['metric']} {f * w['test_mean']:.2f} ± {f * w['test_std']:.2f}"
        seq = "" if w["seq_acc_mean"] != w["seq_acc_mean"] else f"{100 * w['seq_acc_mean']:.2f}"
        rate = "" if w["update_rate"] is None else f"{w['update_rate']:.3f}"
        lines.append(
            f"| {w['task']} | {w['model']} | {len(w['seeds'])} | {val} | {seq} | {rate} | "
            f"{','.join(map(str, w['steps']))} | {w['train_h']:.2f} |"
        )
    return "\n".join(lines) + "\n", rows


def plot_curves(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        by: dict[str, list[dict]] = defaultdict(list)
        for r in runs:
            if r["task"] == task:
                by[label(r)].append(r)
        for name, rs in sorted(by.items()):
            steps = sorted({s for r in rs for s, _ in r["_curve"]})
            ys = [[dict(r["_curve"]).get(s) for r in rs] for s in steps]
            mean = [statistics.fmean([v for v in y if v is not None]) for y in ys]
            lo = [min(v for v in y if v is not None) for y in ys]
            hi = [max(v for v in y if v is not None) for y in ys]
            (line,) = ax.plot(steps, mean, label=f"{name} ({len(rs)} seeds)")
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
        metric = runs[0]["metric_name"]
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {metric}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def trained_gates(run_dir: Path):
    """(task, checkpoint path, [(layer, gate [T, H] as numpy)]) of a suRNN run's best
    checkpoint (else its last) over one sequence of its task."""
    import torch
    from omegaconf import OmegaConf

    from surnn.harness import checkpoint
    from surnn.harness.config import BackboneConfig, checked
    from surnn.harness.run import build_model, build_task
    from surnn.layer import SelectiveUpdateGRU

    cfg = OmegaConf.load(run_dir / "config.yaml")
    task = build_task(cfg)
    task.splits()
    model = build_model(task, checked(BackboneConfig, cfg.model, "model"))
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.exists():
        ckpt = run_dir / "checkpoints" / "last.pt"
    model.load_state_dict(checkpoint.load(ckpt)["model"])
    gates = []
    for i, blk in enumerate(model.encoder.blocks):
        rnn = getattr(blk.mixer, "rnn", None)
        if isinstance(rnn, SelectiveUpdateGRU):
            with torch.no_grad():
                g, _ = rnn.gates[0](task.max_len)
            gates.append((i, g.float().numpy()))
    if not gates:
        raise SystemExit(f"error: {run_dir} has no suRNN layer to draw")
    return task, ckpt, gates


def _longest_closed(col) -> int:
    """The longest run of consecutive closed steps (g == 0) of one neuron."""
    best = cur = 0
    for v in col:
        cur = cur + 1 if v == 0 else 0
        best = max(best, cur)
    return best


def gate_stats(run_dir: Path) -> dict:
    """What the trained gate can hold: per layer, each neuron's longest closed stretch
    (a closed neuron keeps its state exactly), and for copy memory the neurons that are
    open while the symbols arrive and then closed through the whole delay: the only ones
    that carry what they read across the delay untouched (the readout sees the state of
    every neuron at the recall, open or closed)."""
    task, ckpt, gates = trained_gates(run_dir)
    out = {"run": str(run_dir), "checkpoint": ckpt.name, "task": task.name}
    for i, g in gates:
        spans = sorted(_longest_closed(g[:, h]) for h in range(g.shape[1]))
        st = {
            "update_rate": float(g.mean()),
            "longest_closed_max": int(spans[-1]),
            "longest_closed_median": int(spans[len(spans) // 2]),
        }
        if task.name == "copy_memory":
            a, b = task.n_copy, task.n_copy + task.delay
            seen = g[:a].any(0)
            held = ~g[a:b].any(0)
            st["closed_through_delay"] = int(held.sum())
            st["open_at_input_then_closed_through_delay"] = int((seen & held).sum())
            st["delay"] = int(task.delay)
        out[f"layer{i}"] = st
    return out


def gate_raster(run_dir: Path, path: Path) -> dict:
    """The trained gates of a suRNN run (best checkpoint) over one sequence of its task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, ckpt, gates = trained_gates(run_dir)
    fig, axes = plt.subplots(len(gates), 1, figsize=(12, 3 * len(gates)), squeeze=False)
    marks = []
    if task.name == "copy_memory":
        marks = [task.n_copy, task.n_copy + task.delay]
    elif task.name == "selective_copy":
        marks = [task.length]
    info = {}
    for ax, (i, g) in zip(axes[:, 0], gates):
        ax.imshow(g.T, aspect="auto", cmap="gray", interpolation="nearest")
        for m in marks:
            ax.axvline(m - 0.5, color="red", lw=0.8)
        rate = float(g.mean())
        info[f"layer{i}"] = {
            "update_rate": rate,
            "never_open": int((g.sum(0) == 0).sum()),
            "always_open": int((g.sum(0) == g.shape[0]).sum()),
        }
        ax.set_title(
            f"{run_dir.name}: layer {i} gate (white = update), rate {rate:.3f}; red: recall cue"
            if marks
            else ""
        )
        ax.set_xlabel("step")
        ax.set_ylabel("neuron")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"run": str(run_dir), "checkpoint": ckpt.name, **info}


def stats_table(stats: list[dict]) -> str:
    """Markdown: what each trained suRNN gate can hold (see gate_stats)."""
    lines = [
        "## What the trained gates can hold (per suRNN run and layer)",
        "",
        "| run | layer | update rate | longest closed stretch: max / median (steps) "
        "| closed through the whole delay | open at the input, then closed through the "
        "delay |",
        "|---|---|---|---|---|---|",
    ]
    for st in stats:
        for key, v in st.items():
            if not key.startswith("layer"):
                continue
            held = v.get("closed_through_delay", "–")
            both = v.get("open_at_input_then_closed_through_delay", "–")
            lines.append(
                f"| {Path(st['run']).name} | {key[5:]} | {v['update_rate']:.3f} | "
                f"{v['longest_closed_max']} / {v['longest_closed_median']} | "
                f"{held} | {both} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="run folders (searched recursively)")
    ap.add_argument("--out", type=Path, default=Path("results/memory"))
    ap.add_argument(
        "--raster",
        type=Path,
        default=None,
        help="suRNN run folder for the gate raster (default: first surnn, seed 0)",
    )
    args = ap.parse_args(argv)
    runs = find_runs(args.roots)
    args.out.mkdir(parents=True, exist_ok=True)
    md, rows = table(runs)
    (args.out / "memory.md").write_text(md)
    (args.out / "memory.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    plot_curves(runs, args.out / "curves.png")
    raster = args.raster
    if raster is None:
        su = [r for r in runs if r["model"] == "surnn" and r["seed"] == 0]
        raster = su[0]["_dir"] if su else None
    if raster is not None:
        info = gate_raster(Path(raster), args.out / "gate_raster.png")
        (args.out / "gate_raster.json").write_text(json.dumps(info, indent=2) + "\n")
    stats = [gate_stats(Path(r["_dir"])) for r in runs if r["model"] == "surnn"]
    if stats:
        (args.out / "gate_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        md += "\n" + stats_table(stats)
        (args.out / "memory.md").write_text(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
