"""The library's layers, read from its imports with `ast`, so the rule stays true as the code changes.

config → runs → data → model → train: each layer uses only the ones before it (and the small top-level modules).
launch uses the layers up to train; analysis uses runs and config; report uses analysis; only the command line
(cli) crosses from launch to report. Nothing in the library imports `testing` (synthetic phases for the tests
and the benchmarks), and no two modules import each other, directly or round a loop.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import imginav_lib

PACKAGE = Path(imginav_lib.__file__).parent
TOP = {"errors", "palette", "heads", "text", "resources", "kernel", "files"}  # no torch, usable by every layer
ORDER = ["config", "runs", "data", "model", "train"]
ALLOWED = {
    **{layer: {"top", *ORDER[: i + 1]} for i, layer in enumerate(ORDER)},
    "top": {"top"},
    "launch": {"top", *ORDER, "launch"},
    "analysis": {"top", "config", "runs", "analysis"},
    "report": {"top", "config", "runs", "analysis", "report"},
    "demo": {"top", "demo"},
    "testing": {"top", "config", "runs", "data", "analysis", "demo", "testing"},
    "cli": {"top", *ORDER, "launch", "analysis", "report", "demo", "cli"},
    "notebooks": set(),
    "hpc": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("imginav_lib", *parts))


def layer(module: str) -> str:
    """imginav_lib.config.schema -> config; imginav_lib.errors -> top; imginav_lib.cli -> cli."""
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    name = parts[1]
    return name if name in ALLOWED else "top" if name in TOP else f"unknown:{name}"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported imginav_lib module) for every import in the file, in functions and TYPE_CHECKING too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (the layers read absolute imports)"
            if node.module and node.module.split(".")[0] == "imginav_lib":
                # `from imginav_lib.report import figures` imports the module imginav_lib.report.figures
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.append((node.lineno, sub if (PACKAGE / Path(*sub.split(".")[1:])).with_suffix(".py").exists() else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "imginav_lib"]
    return found


def graph(package: Path = PACKAGE) -> dict[str, list[tuple[int, str]]]:
    return {module_name(p): imports(p) for p in sorted(package.rglob("*.py"))}


def violations(edges: dict[str, list[tuple[int, str]]]) -> list[str]:
    bad = []
    for module, targets in edges.items():
        for line, target in targets:
            if layer(target) not in ALLOWED.get(layer(module), set()):
                bad.append(f"{module}:{line} imports {target} ({layer(module)} may not use {layer(target)})")
    return bad


def cycles(edges: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Loops of imports between modules (a package's __init__ importing its own modules is no loop)."""
    succ = {m: {t for _, t in ts if t != m and not m.startswith(t + ".") and t in edges} for m, ts in edges.items()}
    found, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(succ[m]):
            if state.get(t) == "open":
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(succ):
        if m not in state:
            visit(m, [m])
    return found


def test_every_module_sits_in_a_layer():
    assert [m for m in graph() if layer(m).startswith("unknown")] == []


def test_imports_run_down_the_layers():
    assert violations(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_nothing_in_the_library_imports_the_testing_package():
    users = {m for m, ts in graph().items() for _, t in ts if t.startswith("imginav_lib.testing") and not m.startswith("imginav_lib.testing")}
    assert users == set()


@pytest.mark.parametrize("module, target", [
    ("imginav_lib.config.schema", "imginav_lib.launch.schedulers"),  # the cycle of old: schema -> schedulers
    ("imginav_lib.runs.runlock", "imginav_lib.launch.schedulers"),
    ("imginav_lib.analysis.phase", "imginav_lib.report.publish"),
    ("imginav_lib.launch.runner", "imginav_lib.report.build"),
    ("imginav_lib.model.losses", "imginav_lib.train.trainer"),
])
def test_the_rule_refuses_a_reverse_import(module, target):
    edges = graph()
    assert violations(edges) == []
    edges[module] = [*edges[module], (1, target)]
    assert violations(edges) == [f"{module}:1 imports {target} ({layer(module)} may not use {layer(target)})"]


def test_the_cycle_check_finds_a_loop():
    edges = {"imginav_lib.a.x": [(1, "imginav_lib.a.y")], "imginav_lib.a.y": [(1, "imginav_lib.a.x")]}
    assert cycles(edges) == [["imginav_lib.a.x", "imginav_lib.a.y", "imginav_lib.a.x"]]


def test_pyproject_ships_every_subpackage():
    # A plain `pip install .` installs only the packages pyproject lists: a new subpackage must be among them.
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found - listed == set()
