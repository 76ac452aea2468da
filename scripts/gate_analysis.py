#!/usr/bin/env python
"""Why a learned rhythm gate does or does not come to hold: measured at initialisation.

    python scripts/gate_analysis.py --out results/memory/gate_analysis \
        [--arms uniform timescale clockwork clockwork_1step] [--delay 1000] [--batches 8]

For each copy-memory arm (configs/experiment/memory/copy/<arm>.yaml), builds the model
with its initial gate (seed 0) and measures, over the task's layout (``memory_windows``):

- ``holders``: neurons open at the input and closed through the delay;
- ``bias_only``: neurons that a change of their bias alone can make hold, i.e. whose
  sinusoid sum s_i(t) = sum_k alpha_ik sin(omega_k t + phi_ik) peaks higher in the input
  window than anywhere in the delay (then some b_i opens the input and closes the delay);
  with fast sinusoids in the sum, s_i comes back near its maximum many times during a
  1,000-step delay and no bias can close it there: holding needs the fast amplitudes to
  shrink;
- ``bias_gap``: for the others, how far the delay's peak exceeds the input's (in units of
  the pre-activation), the distance gradient steps would have to cover by reshaping;
- the gradient of the task loss on each gate tensor over ``--batches`` training batches,
  with the arm's surrogate and with straight-through: its mean magnitude per frequency of
  the bank (alpha) and its consistency across batches (|mean| / std, per element): a
  parameter pushed the same way by every batch moves; one pushed at random does not.

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from surnn.harness.cli import CONFIG_DIR
from surnn.harness.config import BackboneConfig, checked
from surnn.harness.run import build_model, build_task
from surnn.layer import SelectiveUpdateGRU
from surnn.provenance import command_line, git_commit, now_iso


def build(arm: str, delay: int, overrides: list[str]):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose(
            "config",
            overrides=[f"experiment=memory/copy/{arm}", f"task.options.delay={delay}", *overrides],
        )
    torch.manual_seed(int(cfg.seed))
    task = build_task(cfg)
    splits = task.splits()
    model = build_model(task, checked(BackboneConfig, cfg.model, "model"))
    return cfg, task, splits, model


def sinusoid_sum(gate, T: int) -> torch.Tensor:
    """s [T, H]: the pre-activation without the bias (and without any rate offset)."""
    with torch.no_grad():
        t = torch.arange(T, dtype=torch.float64)
        omega = gate.log_omega.double().exp()
        phase = t[:, None, None] * omega[None, None, :] + gate.phi.double()[None]
        return (gate.alpha.double()[None] * torch.sin(phase)).sum(-1)


def gradients(model, splits, batches: int, bs: int, surrogate: str | None):
    """Per batch, the gradient of the loss on each gate tensor of layer 0."""
    rnn = next(m for m in model.modules() if isinstance(m, SelectiveUpdateGRU))
    gate = rnn.gates[0]
    if surrogate is not None and hasattr(gate, "surrogate"):
        gate.surrogate = surrogate
    names = [
        n for n in ("bias", "alpha", "phi") if isinstance(getattr(gate, n), torch.nn.Parameter)
    ]
    out = {n: [] for n in names}
    model.train()
    for b in range(batches):
        items = [splits.train[b * bs + i] for i in range(bs)]
        batch = splits.collate(items)
        model.zero_grad()
        logits, aux = model(batch)
        loss = model.objective.loss(logits, batch["y"])
        if "aux_loss" in aux:
            loss = loss + aux["aux_loss"]
        loss.backward()
        for n in names:
            out[n].append(getattr(gate, n).grad.detach().clone())
    return {n: torch.stack(v) for n, v in out.items()}


def _consistency(g: torch.Tensor) -> float:
    """Median over the elements that get a gradient of |mean| / std across batches."""
    live = (g != 0).any(0)
    if not live.any():
        return float("nan")
    mean, std = g.mean(0)[live], g.std(0)[live]
    return float((mean.abs() / std.clamp(min=1e-30)).median())


def summarise(grads: dict[str, torch.Tensor], periods: list[float]) -> dict:
    res = {}
    for n, g in grads.items():  # g: [batches, ...]
        res[n] = {
            "mean_abs": float(g.abs().mean()),
            "with_gradient": float((g != 0).any(0).float().mean()),
            "consistency_median": _consistency(g),
        }
        if n == "alpha":
            res[n]["mean_abs_by_period"] = {
                f"{p:.0f}": float(g[:, :, k].abs().mean()) for k, p in enumerate(periods)
            }
            res[n]["consistency_by_period"] = {
                f"{p:.0f}": _consistency(g[:, :, k]) for k, p in enumerate(periods)
            }
    return res


def analyse(arm: str, delay: int, batches: int, overrides: list[str]) -> dict:
    cfg, task, splits, model = build(arm, delay, overrides)
    rnn = next(m for m in model.modules() if isinstance(m, SelectiveUpdateGRU))
    gate = rnn.gates[0]
    T = task.max_len
    (a0, a1), (b0, b1) = task.memory_windows["input"], task.memory_windows["hold"]
    s = sinusoid_sum(gate, T)
    a = s + gate.bias.double()[None]
    holders = ((a[a0:a1] > 0).any(0) & ~(a[b0:b1] > 0).any(0)).sum()
    peak_in, peak_delay = s[a0:a1].max(0).values, s[b0:b1].max(0).values
    gap = peak_delay - peak_in
    rhythmic = gate.alpha.detach().abs().sum(1) > 0  # (a neuron with no sinusoid never holds)
    periods = [2 * math.pi / w for w in gate.log_omega.double().exp().tolist()]
    out = {
        "arm": arm,
        "delay": delay,
        "init": getattr(gate, "init", None),
        "periods": [round(p, 1) for p in periods],
        "holders": int(holders),
        "bias_only": int((rhythmic & (gap < 0)).sum()),
        "bias_gap_median": float(gap[rhythmic & (gap >= 0)].median())
        if (rhythmic & (gap >= 0)).any()
        else None,
        "amplitude_sum_median": float(gate.alpha.detach().abs().sum(1).median()),
        "neurons": int(gate.bias.numel()),
    }
    surrogate = getattr(gate, "surrogate", None)
    for name, sur in (("arm_surrogate", None), ("ste", "ste")):
        if sur is not None and surrogate is None:
            continue
        torch.manual_seed(0)
        grads = gradients(model, splits, batches, int(cfg.trainer.batch_size), sur)
        out[f"grad_{name}"] = summarise(grads, periods)
        out[f"grad_{name}"]["surrogate"] = sur or surrogate
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| arm | delay | periods | holders at init | could hold by the bias alone | "
        "median gap (delay peak - input peak) of the rest | alpha gradient by period "
        "(mean abs; arm's surrogate) | consistency across batches (median abs(mean)/std) | "
        "gate elements with a gradient (arm's surrogate / ste) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = r.get("grad_arm_surrogate", {}).get("alpha", {})
        by = ", ".join(f"{p}: {v:.2g}" for p, v in g.get("mean_abs_by_period", {}).items())
        cons = ", ".join(f"{p}: {v:.2f}" for p, v in g.get("consistency_by_period", {}).items())
        gap = "–" if r["bias_gap_median"] is None else f"{r['bias_gap_median']:.2f}"
        live = [
            r.get(k, {}).get("bias", {}).get("with_gradient")
            for k in ("grad_arm_surrogate", "grad_ste")
        ]
        live_s = " / ".join("–" if v is None else f"{100 * v:.0f}%" for v in live)
        lines.append(
            f"| {r['arm']} | {r['delay']} | {', '.join(map(str, r['periods']))} | "
            f"{r['holders']} / {r['neurons']} | {r['bias_only']} | {gap} | {by} | {cons} | "
            f"{live_s} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--arms", nargs="+", default=["uniform", "timescale", "clockwork", "clockwork_1step"]
    )
    ap.add_argument("--delay", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every arm")
    args = ap.parse_args(argv)
    rows = [analyse(a, args.delay, args.batches, args.overrides) for a in args.arms]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    made = {  # the measured gradients depend on the commit and the thread count
        "command": command_line(__file__, argv),
        "commit": git_commit(),
        "threads": torch.get_num_threads(),
        "date": now_iso(),
    }
    Path(f"{args.out}.json").write_text(json.dumps({**made, "rows": rows}, indent=2) + "\n")
    md = markdown(rows) + (
        f"\nMade by `{made['command']}` at commit {made['commit']}, "
        f"{made['threads']} threads, {made['date']}.\n"
    )
    Path(f"{args.out}.md").write_text(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
