"""What the gates of a trained suRNN run hold, read from its run folder.

``trained_gates`` rebuilds the run's model from its ``config.yaml`` and loads its best
checkpoint (else its last), then evaluates every suRNN layer's gate over one sequence of
the run's task. ``gate_stats`` measures, per layer, each neuron's longest closed stretch (a
closed neuron keeps its state exactly) and, on copy memory, the neurons open at the input
and closed through the delay (``surnn.gates.hold_stats``); ``stats_table`` writes those as
Markdown. scripts/plot_memory.py reports them beside the memory study's tables.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from surnn.gates import hold_stats
from surnn.harness import checkpoint
from surnn.harness.config import BackboneConfig, checked
from surnn.harness.validate import build_model, build_task
from surnn.layer import SelectiveUpdateGRU


def trained_gates(run_dir: Path):
    """(task, checkpoint path, [(layer, gate [T, H] as numpy)]) of a suRNN run's best
    checkpoint (else its last) over one sequence of its task."""
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


def longest_closed(col) -> int:
    """The longest run of consecutive closed steps (g == 0) of one neuron."""
    best = cur = 0
    for v in col:
        cur = cur + 1 if v == 0 else 0
        best = max(best, cur)
    return best


def holding(task, g, late: bool = False):
    """Bool per neuron: open at the input and closed through the delay (copy memory); with
    ``late``, closed through its last 90% (as ``surnn.gates.hold_stats``' late holders)."""
    win = getattr(task, "memory_windows", None)
    if not win:
        return None
    (a0, a1), (b0, b1) = win["input"], win["hold"]
    if late:
        b0 = b1 - (b1 - b0) * 9 // 10
    return g[a0:a1].any(0) & ~g[b0:b1].any(0)


def gate_stats(run_dir: Path) -> dict:
    """What the trained gate can hold: per layer, each neuron's longest closed stretch
    (a closed neuron keeps its state exactly) and, for copy memory, the neurons open at the
    input and closed through the whole delay: the only ones that carry what they read
    across the delay untouched (the readout sees every neuron's state at the recall)."""
    task, ckpt, gates = trained_gates(run_dir)
    out = {"run": str(run_dir), "checkpoint": ckpt.name, "task": task.name}
    for i, g in gates:
        spans = sorted(longest_closed(g[:, h]) for h in range(g.shape[1]))
        st = {
            "update_rate": float(g.mean()),
            "longest_closed_max": int(spans[-1]),
            "longest_closed_median": int(spans[len(spans) // 2]),
        }
        held = holding(task, g > 0)
        if held is not None:
            win = task.memory_windows
            hs = hold_stats(torch.from_numpy(g), win["input"], win["hold"])
            st["closed_through_delay"] = hs["closed_through_hold"]
            st["open_at_input_then_closed_through_delay"] = hs["holders"]
            st["open_at_input_then_closed_through_90pct_of_delay"] = hs["late_holders"]
            st["delay"] = int(task.delay)
        out[f"layer{i}"] = st
    return out


def stats_table(stats: list[dict]) -> str:
    """Markdown: what each trained suRNN gate can hold (see gate_stats)."""
    lines = [
        "### What the trained gates can hold (per suRNN run and layer)",
        "",
        "| run | layer | update rate | longest closed stretch: max / median (steps) "
        "| closed through the whole delay | open at the input, then closed through the "
        "delay | ... through its last 90% |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in stats:
        for key, v in st.items():
            if not key.startswith("layer"):
                continue
            held = v.get("closed_through_delay", "–")
            both = v.get("open_at_input_then_closed_through_delay", "–")
            late = v.get("open_at_input_then_closed_through_90pct_of_delay", "–")
            lines.append(
                f"| {st.get('name') or Path(st['run']).name} | {key[5:]} | {v['update_rate']:.3f} | "
                f"{v['longest_closed_max']} / {v['longest_closed_median']} | "
                f"{held} | {both} | {late} |"
            )
    return "\n".join(lines) + "\n"
