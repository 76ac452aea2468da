"""Timing for scripts/bench_surnn.py: its ``--suite targets``: the compiled CPU kernel's speed targets, and
streaming through the public layer.

Each target is a pair: a case and its baseline, run back to back in every repetition
after one warm-up; a ratio is min(baseline) / min(case) over the repetitions (noise only
ever adds time) and the JSON keeps every raw time and the load average. Like
``surnn.ops.triton.aot`` for scripts/triton_report.py, it needs nothing but torch and the
method (the op, its gates and layer); ``import surnn`` does not load it.

Every training row names its surrogate: the op's rows (``su_gru`` with the rhythm at 17%)
compute the open neurons and the closed ones within the triangle's half-width ``--width``;
the ``surrogate`` setting times a training step of the public layer with the presets'
gate under each of ``SURROGATES`` (straight-through, the presets' until the surrogate
study, computes every update; the triangle of width 1 is the layer's default) at the
shapes of ``SURROGATE_SHAPES``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from surnn.gates import all_open, build_gate
from surnn.layer import SelectiveUpdateGRU
from surnn.ops import resolve_impl, su_gru
from surnn.provenance import command_line, device_name, git_commit, now_iso

# ------------------------------------------------------------------ the CPU targets
TARGET_RATE = 0.17


def rhythm_at(rate: float, T: int, H: int, width: float, seed: int = 0):
    """The paper's gate (learned rhythm, free per-neuron phases, 4 frequencies) with its
    bias shifted by one constant so that exactly ``rate`` of the [T, H] updates are open
    (the init's rate is only approximate). Returns (g, active_eval, active_train) where
    training adds the near-threshold neurons of the bounded surrogate (|a| < width)."""
    torch.manual_seed(seed)
    gate = build_gate(H, H, {"kind": "rhythm", "init_rate": rate, "width": width, "n_freqs": 4})
    with torch.no_grad():
        a = gate.preactivation(T)
        shift = torch.quantile(a.flatten().double(), 1 - rate).float()
        a = a - shift
    return (a > 0).float(), a > 0, (a > 0) | (a.abs() < width)


def stream_layer(gru: torch.nn.GRU, T: int, width: float, impl: str) -> SelectiveUpdateGRU:
    """A ``SelectiveUpdateGRU`` in eval mode with ``gru``'s weights whose gate is the one
    ``rhythm_at(TARGET_RATE, T, H, width)`` gives (same seed and construction; the shift
    is the gate's ``rate_offset``, as rate control leaves it), checked equal."""
    H = gru.hidden_size
    gate = {"kind": "rhythm", "init_rate": TARGET_RATE, "width": width, "n_freqs": 4}
    torch.manual_seed(0)
    su = SelectiveUpdateGRU(gru.input_size, H, batch_first=True, gate=gate, impl=impl)
    su.load_state_dict(gru.state_dict(), strict=False)
    su.eval()
    gate = su.gates[0]
    gate.enable_rate_control()
    with torch.no_grad():
        a = gate.preactivation(T)
        gate.rate_offset.fill_(-torch.quantile(a.flatten().double(), 1 - TARGET_RATE).float())
        g, _ = gate(T, dtype=torch.float32)
    assert torch.equal(g, rhythm_at(TARGET_RATE, T, H, width)[0]), "the layer's gate differs"
    return su


#: The surrogates the ``surrogate`` setting times: (kind, half-width); ``ste`` is the LRA suRNN
#: presets' (configs/experiment/lra/*_surnn.yaml), the triangle of width 1 the layer's default.
SURROGATES = (("ste", None), ("triangle", 1.0), ("triangle", 0.3), ("triangle", 0.1))
#: The ``surrogate`` setting's layer shapes, tag -> (B, T, D, H, lengths): the ``big`` target's
#: layer (B=32 T=1024 D=H=512), the pixel presets' (sMNIST: batch 50, 784 steps, width 256) and
#: the demo ListOps' (batch 64, width 64, padded lengths 20..150 as the demo's data).
SURROGATE_SHAPES = {
    "big": (32, 1024, 512, 512, None),
    "smnist": (50, 784, 256, 256, None),
    "demo": (64, 150, 64, 64, (20, 150)),
}

#: The ``stream`` setting's one sequence (B, T, D, H): the paper's sMNIST shape.
STREAM_SHAPE = (1, 784, 1, 256)


#: The ``crossover`` setting: ((B, T, D, H), update rates) where the compiled kernel and
#: the eager path are compared.
CROSSOVER_SHAPES = [
    ((32, 1024, 512, 512), (0.3, 0.5, 0.75, 1.0)),
    ((32, 512, 256, 256), (1.0,)),
    ((32, 221, 64, 64), (0.5, 0.75, 1.0)),
    ((32, 221, 128, 128), (0.5, 0.75, 1.0)),
]


def surrogate_name(kind: str, width: float | None) -> str:
    """``ste`` or ``triangle w=0.3``: how a training row names its surrogate."""
    return kind if width is None else f"{kind} w={width:g}"


def preset_layer(
    gru: torch.nn.GRU, T: int, kind: str, width: float | None, impl: str
) -> SelectiveUpdateGRU:
    """A ``SelectiveUpdateGRU`` in training mode with ``gru``'s weights and the gate as the
    suRNN presets set it (learned rhythm, 4 fixed frequencies with periods 2 .. T, init and
    target rate 0.17 held by rate control) with surrogate ``kind`` of half-width ``width``
    (None: the layer's default)."""
    gate = {
        "kind": "rhythm",
        "n_freqs": 4,
        "period_min": 2.0,
        "period_max": float(T),
        "learn_freqs": False,
        "init_rate": TARGET_RATE,
        "target_rate": TARGET_RATE,
        "rate_control": "bias",
        "surrogate": kind,
        **({} if width is None else {"width": width}),
    }
    torch.manual_seed(0)
    su = SelectiveUpdateGRU(gru.input_size, gru.hidden_size, batch_first=True, gate=gate, impl=impl)
    su.load_state_dict(gru.state_dict(), strict=False)
    return su.train()


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_pairs(pairs: list[dict], reps: int) -> None:
    """Each pair: baseline then case, back to back, every repetition (after one warm-up)."""
    for p in pairs:
        _time(p["base_fn"]), _time(p["case_fn"])
        p["base_times"], p["case_times"] = [], []
    for rep in range(reps):
        for p in pairs:
            p["base_times"].append(_time(p["base_fn"]))
            p["case_times"].append(_time(p["case_fn"]))
        print(f"rep {rep + 1}/{reps} done", flush=True)


def targets(args: argparse.Namespace, root: Path) -> None:
    """Time the ``--suite targets`` cases of scripts/bench_surnn.py (``args``: its
    options), print the table and write the JSON (default under ``root``/results/bench)."""
    impl = resolve_impl(args.impl, torch.device("cpu"), torch.float32)
    width = args.width
    pairs: list[dict] = []

    def pair(setting, name, base, base_fn, case, case_fn, target, extra=None):
        if "train" in case and "surrogate" not in (extra or {}):  # the op, its active set
            extra = {**(extra or {}), "surrogate": surrogate_name("triangle", width)}
        pairs.append(
            {
                "setting": setting,
                "name": name,
                "baseline": base,
                "case": case,
                "base_fn": base_fn,
                "case_fn": case_fn,
                "target": target,
                **(extra or {}),
            }
        )

    def layer(B, T, D, H, seed=0):
        torch.manual_seed(seed)
        gru = torch.nn.GRU(D, H, batch_first=True)
        w = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
        x = torch.randn(B, T, D)
        return gru, w, x, x.clone().requires_grad_(), torch.zeros(B, H)

    def infer(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    def train_step(w, xg, fn):
        def run():
            for p in [*w, xg]:
                p.grad = None
            out = fn()
            out = out[0] if isinstance(out, tuple) else out
            out.sum().backward()

        return run

    info = {}
    if "big" in args.settings:
        B, T, D, H = 32, 1024, 512, 512
        gru, w, x, xg, h0 = layer(B, T, D, H)
        g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, width)
        ones, all_on = torch.ones(T, H), torch.ones(T, H, dtype=torch.bool)
        info["big"] = {
            "B": B,
            "T": T,
            "D": D,
            "H": H,
            "rate": float(g.mean()),
            "train_active_rate": float(a_tr.float().mean()),
        }
        su = infer(lambda: su_gru(x, h0, *w, g, a_ev, impl=impl))
        pair(
            "big",
            "inference vs nn.GRU",
            "nn.GRU fwd",
            infer(lambda: gru(x)),
            f"su {impl} fwd",
            su,
            4.0,
        )
        pair(
            "big",
            "inference vs rate 1 (same kernel)",
            f"su {impl} rate 1 fwd",
            infer(lambda: su_gru(x, h0, *w, ones, all_on, impl=impl)),
            f"su {impl} fwd",
            su,
            4.0,
        )
        pair(
            "big",
            "inference vs rate 1 (eager cpu path)",
            "su cpu rate 1 fwd",
            infer(lambda: su_gru(x, h0, *w, ones, all_on, impl="cpu")),
            f"su {impl} fwd",
            su,
            4.0,
        )
        pair(
            "big",
            "training step vs nn.GRU",
            "nn.GRU train",
            train_step(w, xg, lambda: gru(xg)),
            f"su {impl} train",
            train_step(w, xg, lambda: su_gru(xg, h0, *w, g, a_tr, impl=impl)),
            2.0,
        )
    if "small" in args.settings:
        for H, T in [(64, 221), (64, 1000), (128, 221), (128, 1000)]:
            B, D = 32, H
            gru, w, x, xg, h0 = layer(B, T, D, H)
            g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, width)
            tag = f"small H={H} T={T}"
            info[tag] = {
                "B": B,
                "T": T,
                "D": D,
                "H": H,
                "rate": float(g.mean()),
                "train_active_rate": float(a_tr.float().mean()),
            }
            base = train_step(w, xg, lambda gru=gru, xg=xg: gru(xg))
            # the eager path only at the reference point (H=64, T=221): time
            for which in (impl, "cpu") if (H, T) == (64, 221) else (impl,):
                pair(
                    tag,
                    f"training step vs nn.GRU ({which})",
                    "nn.GRU train",
                    base,
                    f"su {which} train",
                    train_step(
                        w,
                        xg,
                        lambda xg=xg, h0=h0, w=w, g=g, a=a_tr, which=which: su_gru(
                            xg, h0, *w, g, a, impl=which
                        ),
                    ),
                    1.0,
                )
    if "padded" in args.settings:
        # LRA-like batches (lengths T/8..T) against nn.GRU both ways: over the padded batch
        # (every step computed; what a padded harness runs) and packed (skips the padding,
        # but its CPU backward runs step by step).
        from torch.nn.utils.rnn import pack_padded_sequence

        for H, T in [(64, 221), (128, 1000)]:
            B, D = 32, H
            gru, w, x, xg, h0 = layer(B, T, D, H)
            g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, width)
            lens = torch.randint(T // 8, T + 1, (B,), generator=torch.Generator().manual_seed(T))
            lens[0] = T
            tag = f"padded H={H} T={T}"
            info[tag] = {
                "B": B,
                "T": T,
                "D": D,
                "H": H,
                "rate": float(g.mean()),
                "train_active_rate": float(a_tr.float().mean()),
                "valid_fraction": float(lens.sum()) / (B * T),
            }

            def packed(x, gru=gru, lens=lens):
                return gru(pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False))

            su_fwd = infer(
                lambda x=x, h0=h0, w=w, g=g, a=a_ev, lens=lens: su_gru(
                    x, h0, *w, g, a, lens, impl=impl
                )
            )
            su_train = train_step(
                w,
                xg,
                lambda xg=xg, h0=h0, w=w, g=g, a=a_tr, lens=lens: su_gru(
                    xg, h0, *w, g, a, lens, impl=impl
                ),
            )
            for how, name, fwd, train in [
                ("padded, dense", "nn.GRU", gru, gru),
                ("packed", "nn.GRU packed", packed, lambda x, packed=packed: packed(x)[0].data),
            ]:
                pair(
                    tag,
                    f"inference vs nn.GRU ({how})",
                    f"{name} fwd",
                    infer(lambda x=x, fwd=fwd: fwd(x)),
                    f"su {impl} fwd",
                    su_fwd,
                    1.0,
                )
                pair(
                    tag,
                    f"training step vs nn.GRU ({how})",
                    f"{name} train",
                    train_step(w, xg, lambda xg=xg, train=train: train(xg)),
                    f"su {impl} train",
                    su_train,
                    1.0,
                )
    if "stream" in args.settings:
        # One sequence through the public layer (eval, no gradients), its gate the op's g.
        B, T, D, H = STREAM_SHAPE
        gru, w, x, xg, h0 = layer(B, T, D, H)
        g, a_ev, a_tr = rhythm_at(TARGET_RATE, T, H, width)
        ones, all_on = torch.ones(T, H), torch.ones(T, H, dtype=torch.bool)
        su = stream_layer(gru, T, width, impl)
        info["stream"] = {"B": B, "T": T, "D": D, "H": H, "rate": float(g.mean())}
        case = infer(lambda: su(x))

        def every_gate_open():
            with torch.no_grad(), all_open():
                su(x)

        pair(
            "stream",
            "layer inference vs every gate open (same layer)",
            "SelectiveUpdateGRU every gate open",
            every_gate_open,
            "SelectiveUpdateGRU",
            case,
            5.3,
            {"per_step": True},
        )
        pair(
            "stream",
            "layer inference vs nn.GRU (B=1)",
            "nn.GRU fwd",
            infer(lambda: gru(x)),
            "SelectiveUpdateGRU",
            case,
            1.0,
            {"per_step": True},
        )
        op = infer(lambda: su_gru(x, h0, *w, g, a_ev, impl=impl))
        pair(
            "stream",
            "op inference vs every gate open (same kernel)",
            f"su {impl} rate 1 fwd",
            infer(lambda: su_gru(x, h0, *w, ones, all_on, impl=impl)),
            f"su {impl} fwd",
            op,
            5.3,
            {"per_step": True},
        )
        # The layer's own time per call: one step (T=1), the same gate row, 20 calls a
        # repetition, layer minus op.
        x1, calls = x[:, :1].contiguous(), 20
        with torch.no_grad():
            g1, a1 = su.gates[0](1, x1, device=x1.device, dtype=x1.dtype)
        info["stream T=1"] = {**info["stream"], "T": 1, "rate": float(g1.mean())}

        def repeat(fn):
            def run():
                with torch.no_grad():
                    for _ in range(calls):
                        fn()

            return run

        pair(
            "stream T=1",
            "the layer's per-call overhead (layer vs op)",
            f"su {impl} fwd",
            repeat(lambda: su_gru(x1, h0, *w, g1, a1, impl=impl)),
            "SelectiveUpdateGRU",
            repeat(lambda: su(x1)),
            None,  # reported, not a target: the row measures the layer's overhead per call
            {"overhead_calls": calls},
        )

    if "surrogate" in args.settings:
        # A training step through the public layer as the presets train it (rate control
        # steering the gate, the gate's autograd, the kernel's forward and backward) under
        # each surrogate, against nn.GRU's over the same (padded) batch.
        for shape, (B, T, D, H, span) in SURROGATE_SHAPES.items():
            gru, w, x, xg, h0 = layer(B, T, D, H)
            lens = None
            if span is not None:
                gen = torch.Generator().manual_seed(T)
                lens = torch.randint(span[0], span[1] + 1, (B,), generator=gen)
                lens[0] = T
            tag = f"surrogate {shape}"
            info[tag] = {"B": B, "T": T, "D": D, "H": H, "rate": TARGET_RATE}
            if lens is not None:
                info[tag]["valid_fraction"] = float(lens.sum()) / (B * T)
            base = train_step(w, xg, lambda gru=gru, xg=xg: gru(xg))
            for kind, wd in SURROGATES:
                su = preset_layer(gru, T, kind, wd, impl)
                params = [*su.parameters()]
                su(xg, lengths=lens)  # the active fraction this surrogate computes in training
                rate, act = float(su.last_update_rate[0]), float(su.last_active_rate[0])
                pair(
                    tag,
                    f"training step vs nn.GRU ({surrogate_name(kind, wd)})",
                    "nn.GRU train",
                    base,
                    f"SelectiveUpdateGRU train ({surrogate_name(kind, wd)})",
                    train_step(params, xg, lambda su=su, xg=xg, lens=lens: su(xg, lengths=lens)),
                    1.0,
                    {
                        "surrogate": surrogate_name(kind, wd),
                        "surrogate_kind": kind,
                        "surrogate_width": 1.0 if wd is None and kind != "ste" else wd,
                        "update_rate": rate,
                        "train_active_rate": act,
                    },
                )

    def crossover(B, T, D, H, rates):
        gru, w, x, xg, h0 = layer(B, T, D, H)
        for rate in rates:
            g, a_ev, a_tr = rhythm_at(rate, T, H, width)
            tag = f"crossover H={H} T={T} rate {rate:g}"
            info[tag] = {
                "B": B,
                "T": T,
                "D": D,
                "H": H,
                "rate": float(g.mean()),
                "train_active_rate": float(a_tr.float().mean()),
            }
            pair(
                tag,
                "inference: compiled vs eager cpu",
                "su cpu fwd",
                infer(lambda g=g, a=a_ev: su_gru(x, h0, *w, g, a, impl="cpu")),
                "su compiled fwd",
                infer(lambda g=g, a=a_ev: su_gru(x, h0, *w, g, a, impl="compiled")),
                1.0,
            )
            pair(
                tag,
                "training: compiled vs eager cpu",
                "su cpu train",
                train_step(w, xg, lambda g=g, a=a_tr: su_gru(xg, h0, *w, g, a, impl="cpu")),
                "su compiled train",
                train_step(w, xg, lambda g=g, a=a_tr: su_gru(xg, h0, *w, g, a, impl="compiled")),
                1.0,
            )

    if "crossover" in args.settings:  # where auto should stop picking the compiled kernel
        for (B, T, D, H), rates in CROSSOVER_SHAPES:
            crossover(B, T, D, H, rates)

    load_before = os.getloadavg()
    if set(args.settings) == {"stream"}:  # a B=1 sequence takes ~20 ms: more repetitions
        args.reps = max(args.reps, 30)  # so that some run without a preemption
    run_pairs(pairs, args.reps)
    load_after = os.getloadavg()
    rows = []
    print(f"\nthreads={args.threads} impl={impl} rhythm (free phases) at {TARGET_RATE:.0%}")
    print(
        f"{'setting':<20}{'case':<42}{'base min s':>11}{'case min s':>11}{'ratio':>7}{'target':>7}  met"
    )
    for p in pairs:
        bmin, cmin = min(p["base_times"]), min(p["case_times"])
        ratio = bmin / cmin
        T = info[p["setting"]]["T"]
        row = {k: p[k] for k in ("setting", "name", "baseline", "case", "target")}
        row.update(
            base_min_s=bmin,
            case_min_s=cmin,
            ratio_of_min=ratio,
            met=None if p["target"] is None else ratio >= p["target"],
            base_times_s=p["base_times"],
            case_times_s=p["case_times"],
            sizes=info[p["setting"]],
        )
        for k in ("surrogate", "surrogate_kind", "surrogate_width"):
            if k in p:
                row[k] = p[k]
        for k in ("update_rate", "train_active_rate"):  # the case's own (surrogate setting)
            if k in p:
                row[f"case_{k}"] = p[k]
        if p.get("per_step"):
            row["case_us_per_step"] = cmin / T * 1e6
            row["base_us_per_step"] = bmin / T * 1e6
        if p.get("overhead_calls"):
            row["overhead_us_per_call"] = (cmin - bmin) / p["overhead_calls"] * 1e6
        rows.append(row)
        print(
            f"{p['setting']:<20}{p['name']:<42}{bmin:>11.4f}{cmin:>11.4f}{ratio:>7.2f}"
            + (
                f"{p['target']:>7.1f}  {'yes' if row['met'] else 'NO'}"
                if p["target"] is not None
                else f"{'–':>7}  (reported)"
            )
        )
        if "case_train_active_rate" in row:
            print(f"{'':<20}  computed in training: {row['case_train_active_rate']:.3f}")
        if p.get("per_step"):
            print(
                f"{'':<20}  per step: {row['case_us_per_step']:.1f} us (case), "
                f"{row['base_us_per_step']:.1f} us (baseline)"
            )
        if p.get("overhead_calls"):
            print(f"{'':<20}  per call: {row['overhead_us_per_call']:.1f} us")
    surrogate_rows(rows)  # each surrogate row's vs_ste, before the JSON is written
    meta = {
        "command": command_line(),
        "label": args.label,
        "method": "per repetition each case runs right after its baseline; ratio = min(baseline) / min(case)",
        "gate": f"rhythm, free per-neuron phases, 4 frequencies, bias shifted to {TARGET_RATE} open; training rows of the op: the triangle surrogate of half-width {width:g} (computed in training: open or |a| < {width:g}); the surrogate setting: the layer with the presets' gate under each surrogate it names",
        "device": device_name("cpu"),
        "threads": args.threads,
        "impl": impl,
        "torch": torch.__version__,
        "date": now_iso(),
        "commit": git_commit(root, short=True),
        "reps": args.reps,
        "loadavg_before_after": [load_before, load_after],
        "settings": info,
        "rows": rows,
    }
    out = Path(args.out) if args.out else root / "results" / "bench" / "surnn_cpu_targets.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta, indent=1))
    out.with_suffix(".md").write_text(targets_md(meta))
    print(f"wrote {out} and {out.with_suffix('.md').name}")


def surrogate_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """The ``surrogate`` setting's rows by shape tag (``surrogate big`` ...), each with
    ``vs_ste``: the straight-through step's min time / this surrogate's (same run)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["setting"].startswith("surrogate ") and "case_train_active_rate" in r:
            out.setdefault(r["setting"], []).append(r)
    for rs in out.values():
        ste = next((r["case_min_s"] for r in rs if r["surrogate"] == "ste"), None)
        for r in rs:
            r["vs_ste"] = None if ste is None else ste / r["case_min_s"]
    return out


def surrogate_md(rows: list[dict]) -> list[str]:
    """The ``surrogate`` setting as its own table: per layer shape and surrogate, the
    fraction of updates computed in training and the training step's time."""
    by = surrogate_rows(rows)
    if not by:
        return []
    lines = [
        "",
        "Training step through `SelectiveUpdateGRU` as the suRNN presets train it (rhythm "
        "gate, periods 2 .. T, rate 0.17 held by rate control), by surrogate: the fraction "
        "of updates computed in training (open neurons, and for the triangle the closed ones "
        "within its half-width; straight-through computes every one) and the step's min time:",
        "",
        "| shape | B | T | D=H | surrogate | computed in training | step min (s) "
        "| vs nn.GRU | vs ste |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tag, rs in by.items():
        for r in rs:
            z = r["sizes"]
            vs = "–" if r["vs_ste"] is None else f"{r['vs_ste']:.2f}x"
            lines.append(
                f"| {tag.split(' ', 1)[1]} | {z['B']} | {z['T']} | {z['H']} | {r['surrogate']} "
                f"| {r['case_train_active_rate']:.3f} | {r['case_min_s']:.4f} "
                f"| {r['ratio_of_min']:.2f}x | {vs} |"
            )
    return lines


def targets_md(meta: dict) -> str:
    """A ``--suite targets`` JSON as a Markdown table (written beside it)."""
    lines = [
        f"# CPU targets: {', '.join(sorted(meta['settings']))}",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['device']}, {meta['threads']} threads, impl={meta['impl']}, torch "
        f"{meta['torch']}, commit {meta['commit']}, {meta['date']}, {meta['reps']} repetitions; "
        f"1-minute load average {meta['loadavg_before_after'][0][0]:.2f} before, "
        f"{meta['loadavg_before_after'][1][0]:.2f} after. {meta['label']}".rstrip(),
        "",
        f"Gate: {meta['gate']}. {meta['method']}.",
        "",
        "| setting | B | T | D | H | rate | target | baseline | case | surrogate (training) "
        "| baseline min (s) | case min (s) | ratio | wanted | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in meta["rows"]:
        z = r["sizes"]
        lines.append(
            f"| {r['setting']} | {z['B']} | {z['T']} | {z['D']} | {z['H']} | {z['rate']:.3f} "
            f"| {r['name']} | {r['baseline']} | {r['case']} | {r.get('surrogate') or '–'} "
            f"| {r['base_min_s']:.4f} | {r['case_min_s']:.4f} | {r['ratio_of_min']:.2f}x "
            + (
                f"| >= {r['target']:g}x | {'yes' if r['met'] else 'no'} |"
                if r["target"] is not None
                else "| – | (reported) |"
            )
        )
    lines += surrogate_md(meta["rows"])
    overhead = [r for r in meta["rows"] if "overhead_us_per_call" in r]
    if overhead:
        lines += [
            "",
            "Per-call overhead of the layer (one step, the same gate row; min layer time - "
            "min op time over the same repetitions, per call): "
            + "; ".join(f"{r['overhead_us_per_call']:.1f} us" for r in overhead),
        ]
    per_step = [r for r in meta["rows"] if "case_us_per_step" in r]
    if per_step:
        lines += [
            "",
            "Per step (B=1): "
            + "; ".join(
                f"{r['case']} {r['case_us_per_step']:.1f} us vs {r['baseline']} "
                f"{r['base_us_per_step']:.1f} us"
                for r in per_step
            ),
        ]
    return "\n".join(lines) + "\n"
