#!/usr/bin/env python
"""Figures from run folders and checkpoints, one command each (PNG under results/figures/).

    python scripts/make_figures.py gate RUN_DIR        # learned gate raster + learned periods
    python scripts/make_figures.py rates RUN_DIR...    # update rate per layer over training
    python scripts/make_figures.py acc-rate ROOT...    # test accuracy against update rate
    python scripts/make_figures.py curves ROOT...      # learning curves of a table's runs

A run folder is what run.py writes (results.json, metrics.jsonl, config.yaml,
checkpoints/best.pt or last.pt); a ROOT is any folder holding run folders (e.g. the
folder of one reproduce.py table). ``--out`` sets the folder (default results/figures),
``--name`` the file stem. Each figure's title names the runs' settings as the runs record
them (task, model, variant), so a mini or demo run is never mistaken for the paper's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from surnn.harness.results import RunResult  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _fail(msg: str):
    raise SystemExit(f"error: {msg}")


def _results(run: Path) -> RunResult:
    """The run's results.json (an empty record while the run has not finished)."""
    p = run / "results.json"
    return RunResult.load(p) if p.exists() else RunResult()


def _metrics(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    if not p.exists():
        _fail(f"{run} has no metrics.jsonl; pass a run folder written by run.py")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _runs(roots: list[Path]) -> list[Path]:
    runs = []
    for root in roots:
        if not root.exists():
            _fail(f"{root} does not exist; pass run folders or folders holding them")
        runs += sorted(p.parent for p in root.rglob("results.json"))
    if not runs:
        _fail(f"no results.json under {', '.join(map(str, roots))}; train with run.py first")
    return runs


def _label(r: RunResult) -> str:
    return f"{r.task or '?'} {r.model or '?'}" + (f" [{r.variant}]" if r.variant else "")


# ------------------------------------------------------------------------------ gate


def gate_layers(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Rhythm-gate parameters per layer from a state dict: {prefix: {bias, alpha, ...}}."""
    layers: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for k, v in state.items():
        head, _, name = k.rpartition(".")
        if ".gates." in k and name in ("bias", "alpha", "phi", "log_omega", "rate_offset"):
            layers[head][name] = v.float()
    return {
        k: v for k, v in sorted(layers.items()) if {"bias", "alpha", "phi", "log_omega"} <= v.keys()
    }


def rhythm(p: dict[str, torch.Tensor], T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(open [T, R] bool, learned period per rhythm [R]) of one layer's rhythm gate. The
    period is the mean number of steps between the starts of two open spells (T / number
    of spells; T when a rhythm opens once, inf when never)."""
    t = torch.arange(T, dtype=torch.float32)
    omega = p["log_omega"].exp()
    waves = p["alpha"][None] * torch.sin(t[:, None, None] * omega + p["phi"][None])
    a = p["bias"] + waves.sum(-1) + p.get("rate_offset", torch.zeros(()))
    g = a > 0
    starts = (g[1:] & ~g[:-1]).sum(0) + g[0].long()
    return g, T / starts.float()


def fig_gate(run: Path, out: Path, name: str | None = None, length: int | None = None) -> Path:
    ck = next(
        (
            run / "checkpoints" / f
            for f in ("best.pt", "last.pt")
            if (run / "checkpoints" / f).exists()
        ),
        None,
    )
    if ck is None:
        _fail(f"{run}/checkpoints has no best.pt or last.pt")
    state = torch.load(ck, map_location="cpu", weights_only=False)["model"]
    layers = gate_layers(state)
    if not layers:
        _fail(f"{ck} holds no rhythm gate (gate kinds rhythm, soft, random have one)")
    res = _results(run)
    T = length or int((res.data or {}).get("max_len") or 1024)
    fig, axes = plt.subplots(2, len(layers), figsize=(4.5 * len(layers), 6.5), squeeze=False)
    for j, p in enumerate(layers.values()):
        g, periods = rhythm(p, T)
        ax = axes[0, j]
        ax.imshow(g.T.numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
        ax.set_title(f"layer {j}: open (black); {g.float().mean():.3f} of {T} steps")
        ax.set_xlabel("time step")
        ax.set_ylabel("rhythm (neuron or group)")
        ax = axes[1, j]
        finite = periods[periods.isfinite()]
        ax.hist(finite.log10().numpy(), bins=20, color="C0")
        never = int((~periods.isfinite()).sum())
        ax.set_xlabel("log10 learned period (steps between open spells)")
        ax.set_ylabel("rhythms" + (f" ({never} never open)" if never else ""))
    fig.suptitle(f"Learned gate: {_label(res)} ({ck.name}, {T} steps)")
    return _save(fig, out, name or f"gate_{run.name}")


# ------------------------------------------------------------------------------ rates


def fig_rates(runs: list[Path], out: Path, name: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = 0
    for run in runs:
        rows = _metrics(run)
        keys = sorted(
            {
                k
                for r in rows
                for k in r
                if k.startswith("train/layer") and k.endswith("/update_rate")
            }
        )
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            layer = k.split("/")[1]
            ax.plot(*zip(*pts), label=f"{_label(_results(run))} {layer}")
            n += 1
    if not n:
        _fail("no train/layer*/update_rate in these runs' metrics.jsonl (not suRNN runs?)")
    ax.set_ylim(0, 1)
    _labels(ax, "training step", "update rate (training batches)")
    ax.set_title("Update rate per layer over training")
    return _save(fig, out, name or "update_rate_over_training")


# ------------------------------------------------------------------------------ acc-rate


def fig_acc_rate(roots: list[Path], out: Path, name: str | None = None) -> Path:
    pts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for run in _runs(roots):
        r = _results(run)
        rates = list((r.update_rate or {}).values())
        rate = sum(rates) / len(rates) if rates else 1.0  # no gate: every update computed
        pts[_label(r)].append((rate, 100 * r.test_acc))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (lab, xy) in enumerate(sorted(pts.items())):
        xs, ys = zip(*xy)
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sd = (sum((y - my) ** 2 for y in ys) / (len(ys) - 1)) ** 0.5 if len(ys) > 1 else 0.0
        c = f"C{i % 10}"
        ax.scatter(xs, ys, color=c, alpha=0.35, s=14)  # each seed
        ax.errorbar(mx, my, yerr=sd, fmt="o", color=c, capsize=3, label=f"{lab} (n={len(ys)})")
    ax.set_xlim(0, 1.05)
    _labels(ax, "update rate (test set, mean over layers; 1 = dense)", "test accuracy (%)")
    ax.set_title("Accuracy against update rate (mean ± std over seeds; faint: each seed)")
    return _save(fig, out, name or "accuracy_vs_update_rate")


# ------------------------------------------------------------------------------ curves


def fig_curves(roots: list[Path], out: Path, name: str | None = None) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, run in enumerate(_runs(roots)):
        res = _results(run)
        rows, lab = _metrics(run), f"{_label(res)} s{'?' if res.seed is None else res.seed}"
        tr = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
        va = [(r["step"], 100 * r["val/acc"]) for r in rows if "val/acc" in r and "step" in r]
        if tr:
            a1.plot(*zip(*tr), label=lab, color=f"C{i % 10}")
        if va:
            a2.plot(*zip(*va), marker="o", label=lab, color=f"C{i % 10}")
    a1.set_xlabel("training step")
    a1.set_ylabel("training loss")
    _labels(a2, "training step", "validation accuracy (%)")
    fig.suptitle("Learning curves")
    return _save(fig, out, name or "learning_curves")


def _labels(ax, xlabel: str, ylabel: str) -> None:
    """The axes' labels and a legend of the plotted runs."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def _save(fig, out: Path, name: str) -> Path:
    """Lays the figure out and writes out/<name>.png."""
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("figure", choices=["gate", "rates", "acc-rate", "curves"])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "figures")
    ap.add_argument("--name", default=None, help="file stem (default: the figure's)")
    ap.add_argument(
        "--length", type=int, default=None, help="gate: steps to draw (default: the task's)"
    )
    args = ap.parse_args(argv)
    if args.figure == "gate":
        if len(args.paths) != 1:
            _fail("gate takes one run folder")
        fig_gate(args.paths[0], args.out, args.name, args.length)
    elif args.figure == "rates":
        fig_rates(args.paths, args.out, args.name)
    elif args.figure == "acc-rate":
        fig_acc_rate(args.paths, args.out, args.name)
    else:
        fig_curves(args.paths, args.out, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
