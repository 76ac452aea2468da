"""The architecture as a contract: the method (surnn, surnn.layer, surnn.gates, surnn.ops,
surnn.utils, surnn.errors) stands alone; imports flow one way,

    run.py -> surnn.harness.run -> trainer, tasks, backbone -> mixers -> the method

with no cycles; scripts and tests reach code only through the packages."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("surnn", "tasks", "baselines")
HARNESS_ONLY = ("hydra", "omegaconf", "wandb", "datasets", "torchmetrics", "submitit")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(p)] = p
    return out


MODULES = _modules()


def imports_of(path: Path, name: str) -> set[str]:
    """Every module imported anywhere in the file (top level or inside functions), with
    ``from a import b`` resolved to ``a.b`` when that is a module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if full in MODULES else base)
    return out


GRAPH = {m: {i for i in imports_of(p, m) if i in MODULES} for m, p in MODULES.items()}
METHOD = {m for m in MODULES if m.startswith("surnn") and not m.startswith("surnn.harness")}


def test_the_method_imports_nothing_of_the_harness():
    assert {"surnn", "surnn.layer", "surnn.gates", "surnn.ops", "surnn.utils"} <= METHOD
    for m in METHOD:
        external = imports_of(MODULES[m], m)
        bad = {i for i in external if i.split(".")[0] in HARNESS_ONLY + ("tasks", "baselines")}
        bad |= {i for i in external if i.startswith("surnn.harness")}
        assert not bad, f"{m} imports {sorted(bad)}"


def test_import_graph_has_no_cycles():
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def _layer(m: str) -> int:
    """Higher layers may import lower ones only."""
    if m in METHOD:
        return 0
    if m in ("surnn.harness.mixer", "surnn.harness.positions") or m.startswith("baselines"):
        return 1
    if m.startswith("tasks"):
        return 1
    if m in ("surnn.harness.run", "surnn.harness.cli"):
        return 3
    return 2  # backbone, registry, trainer and its parts


def test_imports_flow_one_way():
    for m, deps in GRAPH.items():
        for d in deps:
            if d == "surnn.harness" or m == "surnn.harness":
                continue  # the package docstring module
            assert _layer(d) <= _layer(m), (
                f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
            )
    for m in MODULES:
        if m.startswith("tasks"):
            assert not {d for d in GRAPH[m] if d.startswith(("surnn.harness", "baselines"))}, m
    trainer_deps, todo = set(), ["surnn.harness.trainer"]  # the trainer and its parts
    while todo:
        for d in GRAPH[todo.pop()] - trainer_deps:
            trainer_deps.add(d)
            todo.append(d)
    assert not {d for d in trainer_deps if d.startswith("tasks")}, trainer_deps


def test_scripts_and_tests_reach_code_through_the_packages():
    for p in sorted((ROOT / "scripts").glob("*.py")):
        src = p.read_text()
        assert "sys.path" not in src, f"{p.name} edits sys.path"
        assert not any(i.startswith("tests") for i in imports_of(p, p.stem)), p.name
    for p in sorted((ROOT / "tests").rglob("test_*.py")):
        own = module_name(p)
        others = {i for i in imports_of(p, own) if i.startswith("tests")} - {own, "tests.fixtures"}
        assert not others, f"{own} imports {sorted(others)}: share through tests/fixtures.py"


def test_import_surnn_with_the_harness_and_its_packages_blocked():
    """`import surnn` gives the layer, gates and op with torch alone: the layer runs
    (forward, backward, cpu == reference) with every harness module, every harness
    dependency and numpy made unimportable."""
    blocked = ("surnn.harness", "tasks", "baselines", "numpy") + HARNESS_ONLY
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {blocked!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED or name.startswith(BLOCKED):
                    raise ModuleNotFoundError(f"blocked: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        import torch
        import surnn
        rnn = surnn.SelectiveUpdateGRU(6, 8, num_layers=2, batch_first=True,
                                       gate={{"kind": "rhythm", "init_rate": 0.3}}, impl="cpu")
        x = torch.randn(3, 17, 6, requires_grad=True)
        out, h = rnn(x, lengths=torch.tensor([17, 5, 11]))
        out.sum().backward()
        ref = surnn.SelectiveUpdateGRU(6, 8, num_layers=2, batch_first=True,
                                       gate={{"kind": "rhythm", "init_rate": 0.3}}, impl="reference")
        ref.load_state_dict(rnn.state_dict())
        out2, _ = ref(x, lengths=torch.tensor([17, 5, 11]))
        assert torch.allclose(out, out2, atol=1e-5)
        kinds = ["rhythm", "soft", "random", "interval", "open", "content", "input"]
        assert sorted(surnn.GATES) == sorted(kinds)
        leaked = sorted(m for m in sys.modules if m.startswith(BLOCKED))
        assert not leaked, leaked
        print("ok", tuple(out.shape), float(rnn.last_update_rate[0]))
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok (3, 17, 8)")
