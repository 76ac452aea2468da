#!/usr/bin/env python
"""Parameters and forward FLOPs per sequence of every registered model at every LRA length.

    python scripts/model_table.py [--out results/models.md] [--models surnn,s4d]

Each model is built from its default config (``configs/model/<name>.yaml``) around a task
stand-in with the length, vocabulary, classes and dual flag of each LRA task (``LRA`` below,
as ``configs/task/`` and ``tasks/`` set them; no data files needed), and counted with ``surnn.harness.flops.count_flops`` (FlopCounterMode, eval
mode, one sequence). Counting a recurrent model at 16k steps on a CPU takes minutes, so
each quantity (executed, dense) is obtained in the cheapest sound way and the table says
which:

- ``a``: affine in L (constant work per token: RNNs, dense suRNN), fitted exactly on
  counts at L = 64 and 128 and checked exactly at 192 and 256;
- ``q``: quadratic in L (attention), fitted at 64, 128, 192 and checked at 256;
- ``g``: affine in (L, number of active updates) for time-only gates (executed suRNN):
  the active count at the full length comes from the gate modules (cheap), the
  coefficients from counts at 64, 128, 192, checked at 256;
- ``c``: counted at the full length (everything else, e.g. S4D with its L log L FFTs).
A fit that misses its check by any amount is not used; the model is counted instead.
"""

from __future__ import annotations

import argparse
import datetime
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from surnn.harness.backbone import Model
from surnn.harness.flops import count_flops
from surnn.harness.registry import MIXERS
from surnn.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("model_table")
FIT_LENGTHS = (64, 128, 192, 256)


@dataclass(frozen=True)
class TaskStandIn:
    """The Task attributes the backbone reads (lengths as configs/task/, vocabularies as tasks/)."""

    name: str
    max_len: int
    n_classes: int
    vocab_size: int
    dual: bool = False
    input_kind: str = "tokens"
    input_dim: int | None = None


LRA = (
    TaskStandIn("listops", 2000, 10, 17),  # pad, 4 ops, ], 10 digits, EOS
    TaskStandIn("text", 4096, 2, 257),  # bytes + pad
    TaskStandIn("retrieval", 4000, 2, 257, dual=True),  # two documents of 4000 bytes
    TaskStandIn("image", 1024, 10, 257),  # 256 grey levels + pad (input: tokens)
    TaskStandIn("pathfinder", 1024, 2, 257),
    TaskStandIn("pathx", 16384, 2, 257),
)


def model_config(name: str) -> dict[str, Any]:
    """configs/model/<name>.yaml composed by Hydra (so alias defaults resolve)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from surnn.harness.config import register_schemas

    register_schemas()  # the <group>/_schema every YAML file extends
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"model={name}", "logger=none"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def build(name: str, task: TaskStandIn, cfg: dict[str, Any]) -> Model:
    torch.manual_seed(0)
    return Model(
        task,
        name,
        cfg.get("options") or {},
        d_model=cfg["d_model"],
        n_layers=cfg["n_layers"],
        ffn_mult=cfg["ffn_mult"],
        dropout=cfg["dropout"],
        pool=cfg["pool"],
        head_hidden=cfg.get("head_hidden"),
    ).eval()


def batch(task: TaskStandIn, L: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(L)
    b = {"x": torch.randint(1, task.vocab_size, (1, L), generator=g), "lengths": torch.tensor([L])}
    if task.dual:
        b["x2"] = torch.randint(1, task.vocab_size, (1, L), generator=g)
        b["lengths2"] = torch.tensor([L])
    return b


def active_updates(model: torch.nn.Module, L: int) -> int | None:
    """Active (step, neuron) updates of all time-only gates over L steps; None without gates
    or with an input-dependent gate."""
    try:
        from surnn.gates import Gate
    except ImportError:  # pragma: no cover
        return None
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    if not gates or not all(g.time_only for g in gates):
        return None
    with torch.no_grad():
        return int(sum(int(g(L)[1].sum()) for g in gates))


def solve(rows: list[list[int]], ys: list[int]) -> list[Fraction] | None:
    """Exact solution of a square linear system (Gauss-Jordan on fractions); None if singular."""
    n = len(rows)
    a = [[Fraction(v) for v in r] + [Fraction(y)] for r, y in zip(rows, ys, strict=True)]
    for c in range(n):
        p = next((r for r in range(c, n) if a[r][c] != 0), None)
        if p is None:
            return None
        a[c], a[p] = a[p], a[c]
        for r in range(n):
            if r != c and a[r][c] != 0:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def fit(features: dict[int, list[int]], counts: dict[int, int], k: int) -> list[Fraction] | None:
    """Coefficients from the first k fit lengths if they predict the others exactly."""
    Ls = sorted(counts)
    coef = solve([features[L] for L in Ls[:k]], [counts[L] for L in Ls[:k]])
    if coef is None:
        return None
    for L in Ls[k:]:
        if sum(c * f for c, f in zip(coef, features[L], strict=True)) != counts[L]:
            return None
    return coef


def _same_weights(model: torch.nn.Module, ref: torch.nn.Module) -> torch.nn.Module:
    """Copy ``ref``'s tensors into ``model`` wherever the shapes agree (gates included)."""
    own = model.state_dict()
    model.load_state_dict(
        {k: v for k, v in ref.state_dict().items() if k in own and own[k].shape == v.shape},
        strict=False,
    )
    return model


def flops_at(name: str, task: TaskStandIn, cfg: dict[str, Any]) -> dict[str, Any]:
    """{"params", "executed": (flops, method), "dense": (flops, method)}, one sequence."""
    L = task.max_len
    full = build(name, task, cfg)
    short = {
        n: _same_weights(build(name, TaskStandIn(**{**task.__dict__, "max_len": n}), cfg), full)
        for n in FIT_LENGTHS
    }
    counts = {n: count_flops(m, batch(task, n)) for n, m in short.items()}
    act_full = active_updates(full, L)
    acts = {n: active_updates(m, n) for n, m in short.items()}
    out: dict[str, Any] = {"params": sum(p.numel() for p in full.parameters())}
    full_count = None
    for q in ("executed", "dense"):
        ys = {n: int(round(c[q])) for n, c in counts.items()}
        gated = q == "executed" and act_full is not None
        methods = (
            [("g", 3, lambda n: [1, n, acts.get(n, act_full)])]
            if gated
            else [("a", 2, lambda n: [1, n]), ("q", 3, lambda n: [1, n, n * n])]
        )
        found = None
        for method, k, feats in methods:
            coef = fit({n: feats(n) for n in ys}, ys, k)
            if coef is None:
                continue
            val = sum(c * f for c, f in zip(coef, feats(L), strict=True))
            if val.denominator == 1 and val >= 0:
                found = (int(val), method)
                break
        if found is None:
            if full_count is None:
                log.info("counting %s on %s at the full length %d", name, task.name, L)
                full_count = count_flops(full, batch(task, L))
            found = (int(round(full_count[q])), "c")
        out[q] = found
    return out


def fmt_g(flops: int) -> str:
    return f"{flops / 1e9:.3f}"


def render(rows: dict[str, dict[str, dict[str, Any]]], cfgs: dict[str, dict]) -> str:
    names = list(rows)
    head = "| Model | " + " | ".join(f"{t.name} ({t.max_len})" for t in LRA) + " |"
    sep = "|---" * (len(LRA) + 1) + "|"
    lines = [
        "# Models: parameters and forward FLOPs per sequence",
        "",
        f"Produced by `python scripts/model_table.py` on {datetime.date.today()} at commit "
        f"{git_commit(ROOT, short=True)} (torch {torch.__version__}, CPU). Every registered model with its "
        "default config (`configs/model/<name>.yaml`; aliases omitted), around a stand-in "
        "for each LRA task (length, vocabulary and classes as `configs/task/` and `tasks/` set them; image and "
        "pathfinder as 257-token pixel inputs, the task configs' default).",
        "",
        "| Model | d_model | n_layers | ffn_mult | options |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        c = cfgs[n]
        opts = ", ".join(f"{k}={v}" for k, v in (c.get("options") or {}).items() if k != "gate")
        if "gate" in (c.get("options") or {}):
            opts += f", gate.kind={c['options']['gate'].get('kind')}"
        lines.append(f"| {n} | {c['d_model']} | {c['n_layers']} | {c['ffn_mult']} | {opts} |")
    lines += ["", "## Parameters", "", head, sep]
    for n in names:
        cells = [f"{rows[n][t.name]['params']:,}" for t in LRA]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    for q, title in (("executed", "executed"), ("dense", "dense-equivalent")):
        lines += ["", f"## Forward GFLOPs per sequence, {title}", "", head, sep]
        for n in names:
            cells = [f"{fmt_g(rows[n][t.name][q][0])} ({rows[n][t.name][q][1]})" for t in LRA]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "How each number was obtained: (c) counted at the full length; (a) affine in the "
        "length, fitted exactly at L = 64, 128 and checked exactly at 192, 256; (q) quadratic "
        "in the length, fitted at 64, 128, 192 and checked at 256; (g) affine in (length, "
        "active gate updates), the active updates at the full length taken from the gate "
        "modules, fitted at 64, 128, 192 and checked at 256. A fit that misses a check is "
        "never used. `tests/test_baselines_flops.py` checks the fits against full counts at a "
        "longer length.",
        "",
        "Conventions (`surnn/harness/flops.py`, `baselines/flops.py`): FlopCounterMode in eval "
        "mode on one sequence; a multiply-add is 2 FLOPs; matmuls, attention (both matmuls, "
        "unmasked, as torch counts it) and FFTs (2.5 n log2 n for a real n-point transform) "
        "are counted, pointwise work (gates, softmax, norms, the spectral product) is not. "
        "Retrieval counts both documents and the pair classifier. Batch 1: the S4D kernel "
        "(computed from the parameters once per call) is charged to the one sequence; in a "
        "batch of B it is shared, so a trained run's results.json may report less. "
        "Executed = dense except for selective-update models, whose executed count is at "
        "initialisation (untrained gates, update rate near the gate's init_rate); a trained "
        "model's executed FLOPs are in its run's results.json.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "models.md")
    ap.add_argument("--models", default=None, help="comma-separated subset (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = MIXERS.names() if args.models is None else args.models.split(",")
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    cfgs = {}
    for name in names:
        cfgs[name] = cfg = model_config(name)
        rows[name] = {}
        for task in LRA:
            rows[name][task.name] = r = flops_at(name, task, cfg)
            log.info(
                "%s %s: params %d, executed %s (%s), dense %s (%s)",
                name,
                task.name,
                r["params"],
                fmt_g(r["executed"][0]),
                r["executed"][1],
                fmt_g(r["dense"][0]),
                r["dense"][1],
            )
    text = render(rows, cfgs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
