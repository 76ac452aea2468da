#!/usr/bin/env python
"""One command per table: launch the runs a table needs as ONE Hydra multirun, then build it.

    python scripts/reproduce.py lra                      # full scale, 3 seeds (a GPU cluster)
    python scripts/reproduce.py lra --launcher slurm hydra.launcher.partition=gpu
    python scripts/reproduce.py lra --scale mini         # sized for a 2-core CPU
    python scripts/reproduce.py ablation --scale mini --dry-run   # print the commands only

Tables: ``lra`` (the six LRA tasks x suRNN, GRU, LSTM, S4D, Transformer), ``pixel``
(sMNIST, psMNIST, sCIFAR x the same models), ``ablation`` (the gate on ListOps: binary
with straight-through or triangle surrogate, soft, random, interval, open, input
threshold), ``efficiency`` (suRNN against GRU: update rate, executed and dense FLOPs of
the model and of the mixers, step time). Each run is a preset of configs/experiment/
(``lra/``, ``pixel/``, ``ablation/``; ``mini/`` for ``--scale mini``).

The memory study (``memory``, ``memory-offset``, ``memory-long``; one scale, sized for a
2-core CPU) runs the arms of configs/experiment/memory/copy/ (GRU, LSTM and suRNN with
each gate initialisation, the hand-set gate and the gate ablation) on copy memory, and
``scripts/plot_memory.py`` builds its tables and figures in results/memory/:
``memory`` every arm at delays 200 and 1,000, seeds 0-2, 2,000 steps; ``memory-offset``
the symbols at a random offset in the first 100 steps (delay 1,000); ``memory-long``
10,000 steps at delay 1,000; ``memory-remedies`` the clockwork gate with straight-through,
a narrower surrogate, a rate target or its own learning rate, the uniform gate without rate
control, and the copy preset's gate frozen at its initialisation;
``memory-selective`` selective copy at length 1,000: suRNN,
S4D and both orders of their hybrid (configs/experiment/memory/selective/).

The rate-control study (``rate-control``; the demo ListOps, seeds 0-2) runs the arms of
configs/experiment/rate_control/ (suRNN at target update rates 0.17 and 0.5, with its gate
open, and GRU), each on one CPU thread as its committed runs (training is deterministic for a
given thread count), into run folders named by run_id; then the table
(results/rate_control/demo_rate_control.{md,tex,json}) and the accuracy-against-rate figure
(results/figures/demo_listops_acc_rate.png).

The surrogate study (``surrogate``; the demo ListOps, seeds 0-2, one CPU thread per run)
trains the suRNN with the gate as the LRA presets set it, once per surrogate gradient
(configs/experiment/surrogate/: straight-through, the triangle of half-width 1, 0.3 and
0.1), and ``scripts/surrogate_table.py`` builds results/surrogate/surrogate.{md,json}:
accuracy per arm beside the training work each surrogate computes (from the runs) and the
training step's time (from ``bench_surnn.py --suite targets --settings surrogate``, run on
a quiet machine; its JSON is an input of the table, ``--bench``).

``--scale mini`` runs only the tasks whose data this machine can make (ListOps and
Pathfinder, generated small into ``data/mini``) at a size a 2-core CPU finishes; the
tables it builds are named "mini scale" and carry no published numbers beside them. The
tasks it leaves out are listed, with why, in the output and in the table.

Launchers: ``local`` (Hydra's basic launcher: one run after another in this process, the
right thing on a small machine), ``submitit-local`` (parallel local subprocesses through
submitit, the SLURM code path), ``slurm``. Extra arguments are Hydra overrides passed to
every run (e.g. ``hydra.launcher.partition=gpu``, ``trainer.max_steps=10``).

Runs go to ``outputs/reproduce/<table>-<scale>/`` (rerunning resumes finished runs'
folders only if you pass the same folder); the table to ``results/tables/<table>-<scale>.
{md,tex,json}`` through scripts/make_tables.py.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["surnn", "gru", "lstm", "s4d", "transformer"]
LRA = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
PIXEL = ["smnist", "psmnist", "scifar"]
GATES = ["binary", "triangle", "soft", "random", "interval", "open", "input"]
MINI_TASKS = ["listops", "pathfinder"]

#: Why a task has no mini-scale run on a machine without the data.
NOT_MADE_HERE = {
    "text": "IMDB must be downloaded (aclImdb or the Hugging Face hub); nothing generates it",
    "retrieval": "needs the LRA release's AAN pairs (tsv_data/); nothing generates them",
    "image": "CIFAR-10 must be downloaded; nothing generates it",
    "pathx": "the generator makes it, but 200,000 images at 128x128 take about 30 min on "
    "16 cores and each 16,384-step sequence is far beyond a 2-core CPU's budget",
    "smnist": "MNIST must be downloaded; nothing generates it",
    "psmnist": "MNIST must be downloaded; nothing generates it",
    "scifar": "CIFAR-10 must be downloaded; nothing generates it",
}

MEMORY_ARMS = [
    "gru",
    "lstm",
    "uniform",
    "timescale",
    "clockwork",
    "clockwork_1step",
    "handset",
    "soft",
    "random",
]
#: the memory table's arms not run with the symbols at an offset
OFFSET_SKIPS = ("handset", "soft", "random")
#: (experiments, sweep overrides) of the memory study's tables (seeds: --seeds, default 0-2)
MEMORY = {
    "memory": ([f"memory/copy/{a}" for a in MEMORY_ARMS], ["task.options.delay=1000,200"]),
    # (task=copy_memory: Hydra checks the fixed overrides against the config before the
    # experiments of the sweep are applied)
    "memory-offset": (  # not the hand-set gate (told the layout) nor the ablation arms
        [f"memory/copy/{a}" for a in MEMORY_ARMS if a not in OFFSET_SKIPS]
        + ["memory/copy/clockwork_1step_frozen"],
        ["task=copy_memory", "task.options.delay=1000", "task.options.offset=100"],
    ),
    "memory-long": (  # suRNN first: it decides how long GRU and LSTM must train
        [
            f"memory/copy/{a}"
            for a in (
                "clockwork_1step",
                "clockwork_1step_frozen",
                "clockwork_1step_ste",
                "clockwork",
                "handset",
                "gru",
                "lstm",
            )
        ],
        ["task=copy_memory", "task.options.delay=1000", "trainer.max_steps=10000"],
    ),
    "memory-remedies": (
        [
            f"memory/copy/{a}"
            for a in (
                "clockwork_ste",
                "clockwork_w01",
                "clockwork_target",
                "uniform_free",
                "clockwork_lr10",
                "clockwork_lr01",
                "clockwork_1step_frozen",
            )
        ],
        ["task=copy_memory", "task.options.delay=1000"],
    ),
    "memory-selective": (
        [f"memory/selective/{a}" for a in ("surnn", "s4d", "surnn_s4d", "s4d_surnn")],
        [],
    ),
}

RATE_CONTROL_ARMS = ["t017", "t05", "open", "gru"]
SURROGATE_ARMS = ["ste", "triangle_w1", "triangle_w03", "triangle_w01"]
#: (experiments, sweep overrides) of the tables of one scale, sized for a 2-core CPU
STUDIES = {
    **MEMORY,
    "rate-control": ([f"rate_control/{a}" for a in RATE_CONTROL_ARMS], []),
    "surrogate": ([f"surrogate/{a}" for a in SURROGATE_ARMS], []),
}
#: CPU threads per run where a table fixes them (its committed runs' count)
THREADS = {"rate-control": 1, "surrogate": 1}
#: the surrogate study's benchmark (an input of its table: bench_surnn.py on a quiet machine)
SURROGATE_BENCH = ROOT / "results" / "bench" / "surnn_cpu_targets_surrogate.json"
RATE_CONTROL_SETTING = (
    "demo ListOps (configs/experiment/demo_listops.yaml: generated, lengths 20-150, "
    "depth <= 5), NOT the LRA setting"
)

TITLES = {
    "lra": "Long Range Arena: test accuracy (%) at the best validation step",
    "pixel": "Pixel-level benchmarks: test accuracy (%) at the best validation step",
    "ablation": "Gate ablation on ListOps: test accuracy (%) and update rate",
    "efficiency": "Efficiency: update rate, FLOPs (model and mixer, executed and dense), speed",
    "memory": "Copy memory: recall after a delay, by model and gate initialisation",
    "memory-offset": "Copy memory, the symbols at a random offset in the first 100 steps",
    "memory-long": "Copy memory at delay 1,000: 10,000 training steps",
    "memory-remedies": "Copy memory at delay 1,000: surrogate, width and rate-control variants",
    "memory-selective": "Selective copy at length 1,000: suRNN, S4D and their hybrids",
    "rate-control": "Rate control on the demo ListOps: test accuracy (%) and update rate per layer",
    "surrogate": "The surrogate gradient on the demo ListOps: accuracy and training time",
}


def plan(table: str, scale: str) -> tuple[list[str], list[int], dict[str, str]]:
    """(experiments, seeds, skipped task -> why) of a table at a scale."""
    if table in STUDIES:  # one scale: the CPU-sized study
        return STUDIES[table][0], [0, 1, 2], {}
    if scale == "full":
        seeds = [0, 1, 2]
        exps = {
            "lra": [f"lra/{t}_{m}" for t in LRA for m in MODELS],
            "pixel": [f"pixel/{t}_{m}" for t in PIXEL for m in MODELS],
            "ablation": [f"ablation/{g}" for g in GATES],
            "efficiency": [f"lra/{t}_{m}" for t in LRA[:5] for m in ("surnn", "gru")]
            + [f"pixel/smnist_{m}" for m in ("surnn", "gru")],
        }[table]
        return exps, seeds, {}
    seeds = [0]
    if table == "lra":
        return (
            [f"mini/{t}_{m}" for t in MINI_TASKS for m in MODELS],
            seeds,
            {t: NOT_MADE_HERE[t] for t in LRA if t not in MINI_TASKS},
        )
    if table == "pixel":
        return [], seeds, {t: NOT_MADE_HERE[t] for t in PIXEL}
    if table == "ablation":
        return [f"mini/ablation_{g}" for g in GATES], seeds, {}
    return (
        [f"mini/{t}_{m}" for t in MINI_TASKS for m in ("surnn", "gru")],
        seeds,
        {t: NOT_MADE_HERE[t] for t in [*LRA, "smnist"] if t not in MINI_TASKS},
    )


def launcher_args(name: str) -> list[str]:
    return {
        "local": ["hydra/launcher=basic"],
        "submitit-local": ["hydra/launcher=local"],
        "slurm": ["hydra/launcher=slurm"],
    }[name]


def commands(args, exps: list[str], seeds: list[int], runs: Path, out: Path) -> list[list[str]]:
    py = sys.executable
    memory = args.table in MEMORY
    study = args.table in STUDIES  # seeds vary slowest: every arm of seed 0 runs before seed 1
    subdir = "${task.name}-${model.name}-${variant}-s${seed}"
    if args.table == "rate-control":
        subdir = "${run_id}"
    if args.table == "surrogate":
        subdir = "${variant}-s${seed}"
    if memory:
        subdir = (
            "d${task.options.delay}-o${task.options.offset}-${model.name}-${variant}"
            "-n${trainer.max_steps}-s${seed}"
        )
        if args.table == "memory-selective":
            subdir = "L${task.options.length}-${model.name}-${variant}-s${seed}"
    threads = THREADS.get(args.table)
    sweep = [
        *(["env", f"OMP_NUM_THREADS={threads}", f"MKL_NUM_THREADS={threads}"] if threads else []),
        py,
        str(ROOT / "run.py"),
        "-m",
        *(["seed=" + ",".join(map(str, seeds)), *STUDIES[args.table][1]] if study else []),
        "experiment=" + ",".join(exps),
        *([] if study else ["seed=" + ",".join(map(str, seeds))]),
        *launcher_args(args.launcher),
        f"hydra.sweep.dir={runs}",
        f"hydra.sweep.subdir={subdir}",
        "logger=none",
        *(["trainer.progress=false"] if study else []),
        *([f"data_dir={args.data_dir}"] if args.data_dir else []),
        *args.overrides,
    ]
    if memory:
        tables = [
            py,
            str(ROOT / "scripts" / "plot_memory.py"),
            str(runs),
            "--out",
            str(ROOT / "results" / "memory"),
            "--name",
            args.table,
        ]
        return [sweep, tables]
    if args.table == "rate-control":
        tables = [
            py,
            str(ROOT / "scripts" / "make_tables.py"),
            str(runs),
            "--out",
            str(args.out or ROOT / "results" / "rate_control"),
            "--name",
            "demo_rate_control",
            "--title",
            TITLES[args.table],
            "--setting",
            RATE_CONTROL_SETTING,
        ]
        figure = [
            py,
            str(ROOT / "scripts" / "make_figures.py"),
            "acc-rate",
            str(runs),
            "--out",
            str(args.out or ROOT / "results" / "figures"),
            "--name",
            "demo_listops_acc_rate",
        ]
        return [sweep, tables, figure]
    if args.table == "surrogate":
        table = [py, str(ROOT / "scripts" / "surrogate_table.py"), str(runs), "--bench"]
        table += [str(SURROGATE_BENCH), "--out", str(args.out or ROOT / "results" / "surrogate")]
        return [sweep, [*table, "--copy-runs"]]
    tables = [
        py,
        str(ROOT / "scripts" / "make_tables.py"),
        str(runs),
        "--out",
        str(out),
        "--name",
        f"{args.table}-{args.scale}",
        "--title",
        TITLES[args.table] + (" (MINI SCALE)" if args.scale == "mini" else ""),
    ]
    if args.scale == "mini":
        tables += [
            "--setting",
            "mini scale (scripts/reproduce.py --scale mini: 2-core CPU, configs/experiment/mini/)",
        ]
    return [sweep, tables]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("table", choices=list(TITLES))
    ap.add_argument("--scale", choices=["full", "mini"], default="full")
    ap.add_argument("--launcher", choices=["local", "submitit-local", "slurm"], default="local")
    ap.add_argument(
        "--seeds", default=None, help="comma-separated seeds (default: full 0,1,2; mini 0)"
    )
    ap.add_argument(
        "--only", default=None, help="comma-separated experiments of the table to run (a subset)"
    )
    ap.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="run folders (default outputs/reproduce/<table>-<scale>)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the table goes (default results/tables; rate-control: results/rate_control "
        "and its figure results/figures; surrogate: results/surrogate)",
    )
    ap.add_argument(
        "--data-dir", default=None, help="data_dir (default: mini data/mini, full the config's)"
    )
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = ap.parse_intermixed_args(argv)
    exps, seeds, skipped = plan(args.table, args.scale)
    if args.data_dir is None and args.scale == "mini":
        args.data_dir = str(Path("data") / "mini")
    if args.seeds:
        seeds = [int(s) for s in args.seeds.split(",")]
    if args.only:
        want = args.only.split(",")
        unknown = sorted(set(want) - set(exps))
        if unknown:
            print(
                f"error: --only {','.join(unknown)}: not an experiment of the {args.table} "
                f"table at scale {args.scale}; its experiments are {', '.join(exps)}",
                file=sys.stderr,
            )
            return 2
        exps = [e for e in exps if e in want]
    for task, why in skipped.items():
        print(f"skipped: {task}: {why}")
    if not exps:
        print(
            f"error: the {args.table} table has no task whose data this machine can make at "
            f"scale {args.scale} (see 'skipped' above); run it at full scale where the data are",
            file=sys.stderr,
        )
        return 2
    name = args.table if args.table in STUDIES else f"{args.table}-{args.scale}"
    runs = args.runs or ROOT / "outputs" / "reproduce" / name
    cmds = commands(args, exps, seeds, runs, args.out or ROOT / "results" / "tables")
    for c in cmds:
        print(shlex.join(c), flush=True)
    if args.dry_run:
        return 0
    for c in cmds:
        p = subprocess.run(c, cwd=ROOT)
        if p.returncode:
            print(f"error: exit status {p.returncode} from: {shlex.join(c)}", file=sys.stderr)
            return p.returncode
    if args.table == "surrogate":  # surrogate_table.py writes how the table was made
        return 0
    md = (args.out or ROOT / "results" / "tables") / f"{name}.md"
    if args.table in MEMORY:
        md = ROOT / "results" / "memory" / f"{args.table}.md"
    if args.table == "rate-control":
        md = (args.out or ROOT / "results" / "rate_control") / "demo_rate_control.md"
    from surnn.provenance import command_line  # torch: not needed to plan or launch

    lines = [
        "",
        "## How this table was made",
        "",
        "```",
        command_line(__file__, argv),
        *(shlex.join(c) for c in cmds),
        "```",
    ]
    if skipped:
        lines += ["", "## Skipped tasks", ""] + [f"- {t}: {why}" for t, why in skipped.items()]
    md.write_text(md.read_text() + "\n".join(lines) + "\n")
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
