#!/usr/bin/env python
"""The paper's efficiency numbers from a trained run: update rate and inference speed.

    python scripts/bench_checkpoint.py outputs/<run_id> [more run folders] [--batch 1]

Loads a run folder as run.py wrote it (config.yaml, checkpoints/best.pt, else last.pt)
with the harness's own code (the task and model from the config, the weights from the
checkpoint), reads the task's test split as the run did (its data_dir and options;
``--data-dir`` overrides) and measures, on the first ``--examples`` test sequences
(default 256; 0 = all):

(a) the update rate of each suRNN layer per valid token, as the trainer reports it
    (Trainer.evaluate over those examples; also its test metric, beside results.json's);
(b) inference time of the whole model with its learned gate, mask-aware kernel
    (``--impl``, default ``compiled``: the C++ kernel computing only the open neurons);
(c) the same model with every gate open on the same kernel (the paper's "dense": same
    weights, rate 1);
(d) the same weights in torch.nn.GRU (cuDNN/MKL dense path; ``--no-gru`` skips it);
(e) the learned-gate model with its dense parts as eager torch modules, timed right before
    (b): what running them fused saves (``--dense eager`` times every case that way instead);
(f) with ``--compile``: the learned-gate model with its dense parts under ``torch.compile``
    (dynamic shapes; the suRNN layers run eagerly, as in (b)), timed right after (b): what
    compiling the embedding, feed-forward, norms, pooling and head saves per sequence.

The dense parts (embedding, norms, feed-forward, pooling, head) of (b), (c) and (d) run
fused in the compiled extension (``surnn.harness.fused``, ``--dense fused``, the default on
the CPU): one C++ call per block instead of ~30 small torch ops. Their outputs agree with
the eager model's to float rounding; the JSON records the largest difference of the
outputs and whether every prediction agrees, over the timed sequences.

Each case's whole model and its recurrent layers alone (the suRNN layers' forward: gate
and recurrence, summed over layers) are timed in the same pass: embedding, feed-forward,
norms, pooling and head run dense in every case, so the whole model gains less than its
recurrent layers. The dense parts' time of a case is the whole model's minus its
recurrent layers' in the same pass (its minimum over the passes). In every repetition each case runs right after its baseline; a speedup
is min(baseline) / min(case) over the repetitions (noise only adds time); the JSON keeps
every raw time, the threads, the device and the load average before and after. Writes
``<out>/checkpoint_<run>_B<batch>.json`` and ``.md`` (default results/bench/) and says
whether the run is in the paper's sMNIST setting (a smoke, demo or mini run is not).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

from surnn.errors import HarnessError
from surnn.gates import all_open
from surnn.harness import checkpoint
from surnn.harness.config import BackboneConfig, OptimConfig, TrainerConfig, checked
from surnn.harness.data import eval_loader
from surnn.harness.fused import DENSE_IMPLS, use_fused
from surnn.harness.inference_cases import Clock, agreement, with_dense_compiled, with_nn_gru
from surnn.harness.inference_report import DENSE_PARTS, markdown
from surnn.harness.loggers import Loggers
from surnn.harness.results import RunResult
from surnn.harness.run_setting import experiment_of, scale_of, setting_of
from surnn.harness.trainer import Trainer, is_stream
from surnn.harness.validate import build_model, build_task
from surnn.layer import SelectiveUpdateGRU
from surnn.ops import IMPLS, resolve_impl
from surnn.provenance import command_line, device_name, git_commit, now_iso

ROOT = Path(__file__).resolve().parents[1]
PAPER_TASK = "smnist"


class Fail(Exception):
    """A user-fixable problem with one run folder: one line, exit status 2."""


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders written by run.py")
    p.add_argument("--examples", type=int, default=256, help="first N test sequences (0: all)")
    p.add_argument(
        "--batch", type=int, default=None, help="default: the run's eval batch; 1: streaming"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of every case")
    p.add_argument("--impl", choices=IMPLS, default=None, help="default: compiled (cuda: auto)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-gru", action="store_true", help="skip the torch.nn.GRU case")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the dense parts under torch.compile (the suRNN layers eager)",
    )
    p.add_argument(
        "--dense",
        choices=DENSE_IMPLS,
        default=None,
        help="the dense parts of every case: fused (default on cpu) or eager torch modules",
    )
    p.add_argument("--data-dir", default=None, help="where the run's data are (default: its own)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'quiet')")
    return p.parse_args(argv)


# ------------------------------------------------------------------------ loading


def load_run(run: Path, args) -> dict:
    """Config, results, task, test examples and the model with the checkpoint's weights."""
    if not run.is_dir():
        raise Fail(
            f"run folder {run} does not exist; pass a folder written by run.py (outputs/<run_id>)"
        )
    if not (run / "config.yaml").exists():
        raise Fail(f"{run} has no config.yaml: not a run folder written by run.py")
    names = [f"{args.checkpoint}.pt"] if args.checkpoint else ["best.pt", "last.pt"]
    ck = next((run / "checkpoints" / n for n in names if (run / "checkpoints" / n).exists()), None)
    if ck is None:
        raise Fail(
            f"{run} has no checkpoints/{' or '.join(names)}: train the run until its first "
            "checkpoint (trainer.ckpt_every steps) or pass another run folder"
        )
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / "config.yaml")
    if args.data_dir:
        cfg.data_dir = args.data_dir
    res_path = run / "results.json"
    results = RunResult.load(res_path) if res_path.exists() else None
    try:
        task = build_task(cfg)
        splits = task.splits()
    except HarnessError as e:
        msg = str(e).replace("\n", " ")
        raise Fail(
            f"{run}: the test data cannot be read ({msg}); the run read data_dir="
            f"{cfg.data_dir}: pass --data-dir DIR where its data are"
        ) from None
    if is_stream(splits.test):
        raise Fail(f"{run}: task={task.name} is a token stream (language model): not supported")
    try:
        model = build_model(task, checked(BackboneConfig, cfg.model, "model"))
        payload = checkpoint.load(ck)
        model.load_state_dict(payload["model"])
    except HarnessError as e:
        raise Fail(str(e)) from None
    except (RuntimeError, KeyError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise Fail(f"{ck} does not fit the model {run}/config.yaml builds ({first})") from None
    if not any(isinstance(m, SelectiveUpdateGRU) for m in model.modules()):
        raise Fail(f"{run} (model={cfg.model.name}) has no suRNN layer to benchmark")
    sizes = {s: len(getattr(splits, s)) for s in ("train", "val", "test")}
    step = payload.get("step")
    return dict(
        cfg=cfg,
        results=results,
        task=task,
        splits=splits,
        model=model,
        checkpoint=ck,
        checkpoint_step=step,
        split_sizes=sizes,
    )


# ------------------------------------------------------------------------ one run


def bench_run(run: Path, args, command: str) -> dict:
    """The measurement of one run folder (the JSON's fields); ``command``: the command line
    that asked for it, as the JSON records it."""
    r = load_run(run, args)
    cfg, res, task, splits, model = r["cfg"], r["results"], r["task"], r["splits"], r["model"]
    device = torch.device(args.device)
    impl = args.impl or ("compiled" if device.type == "cpu" else "auto")
    tcfg = checked(TrainerConfig, cfg.trainer, "trainer")
    n_all = len(splits.test)
    n = n_all if args.examples <= 0 else min(args.examples, n_all)
    bs = args.batch or tcfg.eval_batch_size or tcfg.batch_size // tcfg.grad_accum
    for m in model.modules():
        if isinstance(m, SelectiveUpdateGRU):
            m.impl = impl
    ran = resolve_impl(impl, device, torch.float32)

    # (a) as the trainer reports it: Trainer.evaluate over the same n examples
    tc = dataclasses.replace(tcfg, max_eval_examples=n, eval_batch_size=bs, num_workers=0)
    ocfg = checked(OptimConfig, cfg.optim, "optim")
    trainer = Trainer(model, task, splits, tc, ocfg, run, Loggers([]), device)
    ev = trainer.evaluate("test")
    model = trainer.model_raw.eval()
    rates = {k.split("/")[1]: v for k, v in ev.items() if k.endswith("/update_rate")}
    active = {k.split("/")[1]: v for k, v in ev.items() if k.endswith("/active_rate")}
    metric = {k.split("/", 1)[1]: v for k, v in ev.items() if k.count("/") == 1}

    batches = [
        {k: v.to(device) for k, v in b.items() if torch.is_tensor(v)}
        for b in eval_loader(Subset(splits.test, range(n)), bs, splits.collate, 0)
    ]
    tokens = [float(b["lengths"].sum() + b.get("lengths2", torch.zeros(())).sum()) for b in batches]
    dense_impl = args.dense or ("fused" if device.type == "cpu" else "eager")
    if dense_impl == "fused" and device.type != "cpu":
        raise Fail(f"--dense fused runs on the CPU only (--device {args.device})")
    eager = copy.deepcopy(model)  # the same weights, dense parts as torch modules
    use_fused(model, dense_impl == "fused")
    dense_label = "dense parts fused" if dense_impl == "fused" else "dense parts eager"
    clock = Clock(device)
    clock.attach(model)
    cases = {
        "learned": (model, False, f"learned gate, mask-aware ({ran}), {dense_label}"),
        "open": (model, True, f"every gate open, same kernel ({ran}), {dense_label}"),
    }
    fused_check = None
    if dense_impl == "fused":
        clock.attach(eager)
        cases["eager_dense"] = (eager, False, f"learned gate ({ran}), dense parts eager (torch)")
        fused_check = agreement(model, eager, batches)
    gru_diff = None
    if not args.no_gru:
        dense = with_nn_gru(model).eval()
        clock.attach(dense)
        cases["nn_gru"] = (dense, False, f"torch.nn.GRU, same weights (dense), {dense_label}")
        with torch.no_grad(), all_open():
            gru_diff = float((dense(batches[0])[0] - model(batches[0])[0]).abs().max())
    pairs = [("open", "learned")] + ([] if args.no_gru else [("nn_gru", "learned")])
    if "eager_dense" in cases:
        pairs.append(("eager_dense", "learned"))
    compiled_diff = None
    if args.compile:
        fused = with_dense_compiled(eager)
        clock.attach(fused)
        label = "learned gate, dense parts torch.compile'd (suRNN layers eager)"
        cases["compiled"] = (fused, False, label)
        pairs.append(("eager_dense" if "eager_dense" in cases else "learned", "compiled"))
        clock.run(fused, batches, tokens, False)  # compiles (every shape class of the data)
        with torch.no_grad():
            compiled_diff = max(float((fused(b)[0] - eager(b)[0]).abs().max()) for b in batches[:8])
    for m, op, _ in cases.values():  # warm-up: loads the kernel, allocates
        clock.run(m, batches[:1], tokens[:1], op)
    timed = {p: {"base": [], "case": []} for p in pairs}  # (model s, recurrent layers s)
    raw = {name: [] for name in cases}
    case_rates: dict[str, dict] = {}
    load_before = os.getloadavg()
    for rep in range(args.reps):
        for p in pairs:
            for role, name in zip(("base", "case"), p):
                m, op, _ = cases[name]
                total, mix, case_rates[name] = clock.run(m, batches, tokens, op)
                timed[p][role].append((total, mix))
                raw[name].append((total, mix, clock.cpu))
        print(f"{run.name}: rep {rep + 1}/{args.reps} done", flush=True)
    load_after = os.getloadavg()

    out_cases = {}
    for name, (_, _, label) in cases.items():
        ts, ms, cpu = zip(*raw[name])
        out_cases[name] = {
            "label": label,
            "impl": "torch.nn.GRU" if name == "nn_gru" else ran,
            "update_rate": None if name == "nn_gru" else case_rates[name],
            "times_s": ts,
            "mixer_times_s": ms,
            "cpu_times_s": cpu,  # process CPU time of each pass: far below times_s = preempted
            "min_s": min(ts),
            "mixer_min_s": min(ms),
            "dense_min_s": min(t - m for t, m in zip(ts, ms)),
            "ms_per_seq": 1e3 * min(ts) / n,
            "mixer_ms_per_seq": 1e3 * min(ms) / n,
            "dense_ms_per_seq": 1e3 * min(t - m for t, m in zip(ts, ms)) / n,
        }
    out_pairs = []
    for (base, case), t in timed.items():
        bt, bm = zip(*t["base"])
        ct, cm = zip(*t["case"])
        out_pairs.append(
            {
                "baseline": base,
                "case": case,
                "speedup_model": min(bt) / min(ct),
                "speedup_mixer": min(bm) / min(cm),
                "base_times_s": bt,
                "case_times_s": ct,
                "base_mixer_times_s": bm,
                "case_mixer_times_s": cm,
            }
        )

    sett = setting_of(res, run) if res else "unfinished run (no results.json)"
    paper = task.name == PAPER_TASK and res and sett is None
    mean_rate = statistics.fmean(rates.values()) if rates else None
    recorded = res or RunResult()  # an unfinished run (no results.json) records nothing
    return {
        "kind": "checkpoint_efficiency",
        "command": command,
        "label": args.label,
        "run_dir": str(run.resolve()),
        "checkpoint": r["checkpoint"].name,
        "checkpoint_step": r["checkpoint_step"],
        "task": task.name,
        "model": cfg.model.name,
        "variant": recorded.variant,
        "seed": cfg.get("seed"),
        "setting": sett,
        "scale": scale_of(res, run) if res else "unfinished",
        "experiment": experiment_of(res) if res else None,
        "paper_setting": bool(paper),
        "setting_note": (
            "the paper's sMNIST setting (task smnist, standard data, every test example)"
            if paper
            else f"NOT the paper's sMNIST setting (task {task.name}, setting: {sett or 'standard'})"
        ),
        "data_dir": str(cfg.data_dir),
        "split_sizes": r["split_sizes"],
        "data_matches_run": not recorded.split_sizes or recorded.split_sizes == r["split_sizes"],
        "examples": n,
        "test_examples_total": n_all,
        "batch": bs,
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "device": device_name(device, threads=True),
        "impl": ran,
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": now_iso(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        # CPU s / wall s of a pass: the main thread computes all the time, so below ~1 the
        # process was preempted (a busy machine). Of each case's fastest pass (the minimum the
        # speedups use; the lowest over the cases), and how many passes were preempted.
        "cpu_per_wall": min(c / t for t, _, c in (min(v) for v in raw.values())),
        "preempted_passes": sum(c / t < 0.8 for v in raw.values() for t, _, c in v),
        "passes": sum(len(v) for v in raw.values()),
        "update_rate": rates,
        "active_rate": active,
        "update_rate_mean": mean_rate,
        "skipped": None if mean_rate is None else 1 - mean_rate,
        "test_metrics": metric,
        "results_json": {  # what the run recorded (its whole test set, or max_eval_examples)
            "update_rate": recorded.update_rate,
            "test_examples": recorded.test_examples,
            "metric": recorded.metric_name or "acc",
            "test_metric": recorded.test_metric,
        },
        "cases": out_cases,
        "pairs": out_pairs,
        "nn_gru_max_abs_diff_vs_open": gru_diff,
        "compiled_max_abs_diff_vs_eager": compiled_diff,
        "dense": dense_impl,
        "fused_vs_eager": fused_check,
        "method": "per repetition each case runs right after its baseline over the same "
        "pre-collated batches (no data loading timed); speedup = min(baseline) / min(case)",
        "always_dense": DENSE_PARTS,
        "mixer_timing": "the suRNN layers' forward (gate + recurrence) summed over layers; "
        "nn_gru: the torch.nn.GRU layers in their place",
        "dense_timing": f"the {DENSE_PARTS} and the Python between the layers: the whole "
        "model's time minus its recurrent layers' in the same pass, minimum over the passes",
    }


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for run in args.runs:
        try:
            b = bench_run(run, args, command_line(__file__, argv))
        except Fail as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"{args.out}/checkpoint_{run.resolve().name}_B{b['batch']}"
        Path(stem + ".json").write_text(json.dumps(b, indent=1) + "\n")
        md = markdown(b)
        Path(stem + ".md").write_text(md)
        print(md + f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
