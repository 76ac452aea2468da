"""The report of scripts/bench_surnn.py ``--suite targets`` (surnn/ops/bench.py runs the
pairs): each timed pair as a row of the JSON with its ratio of minimum times, printed as it
is made, and the Markdown table written beside the JSON."""

from __future__ import annotations


def print_header(threads: int, impl: str, rate: float) -> None:
    """The printed table's title and column names."""
    print(f"\nthreads={threads} impl={impl} rhythm (free phases) at {rate:.0%}")
    print(
        f"{'setting':<20}{'case':<42}{'base min s':>11}{'case min s':>11}{'ratio':>7}{'target':>7}  met"
    )


def table(pairs: list[dict], info: dict[str, dict]) -> list[dict]:
    """The JSON's rows of the timed ``pairs`` (``info``: each setting's sizes), each printed
    as it is made."""
    rows = []
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
    return rows


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
