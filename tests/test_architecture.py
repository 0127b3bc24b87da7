"""The package's layout holds: the import contracts, no cycles, no private names across modules.

The contracts live in setup.cfg ([importlinter]); `tox -e lint` runs them
too. Imports inside functions (and under TYPE_CHECKING) count: a cycle that
only closes at run time is still a cycle.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
import pytest
from importlinter import cli as importlinter_cli

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "turbolift"
GENERATED = PACKAGE / "v1"


def _modules() -> dict[str, Path]:
    """Every module of the package (but the generated wire code): dotted name -> file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if GENERATED in path.parents:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def test_the_import_contracts_hold(monkeypatch):
    monkeypatch.chdir(REPO)
    assert importlinter_cli.lint_imports(config_filename=str(REPO / "setup.cfg"), no_cache=True) == 0, \
        "an import contract of setup.cfg is broken: run `lint-imports` for the chain"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    graph = grimp.build_graph("turbolift")
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    # A module that imports a package imports its __init__, and a package's
    # __init__ importing its own submodule is how packages work, not a cycle.
    for module in edges:
        edges[module] = {target for target in edges[module] if not module.startswith(target + ".")}
    cycles = _cycles(edges)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in cycles)


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_is_taken_from_another_module():
    """``from .x import _helper`` or ``x._helper`` across modules: what is private to a module stays there.

    Private *modules* (``from . import _runtime``) are the package's own
    business and may be imported; their private names may not.
    """
    offences = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        imported_modules: set[str] = set()      # local names bound to turbolift modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                if not source.startswith("turbolift"):
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    if target in MODULES:
                        imported_modules.add(alias.asname or alias.name)
                    elif _private(alias.name):
                        offences.append(f"{module}: from {source} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("turbolift") and alias.asname:
                        imported_modules.add(alias.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules and _private(node.attr)):
                offences.append(f"{module}: {node.value.id}.{node.attr} (line {node.lineno})")
    assert not offences, "private names used across modules:\n" + "\n".join(offences)


def _imports_of(module: str) -> set:
    tree = ast.parse(MODULES[module].read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(_absolute(module, node))
    return {name for name in imported
            if name.partition(".")[0] not in sys.stdlib_module_names and name != "__future__"}


def test_the_launcher_imports_nothing_but_the_standard_library_the_errors_and_the_template_parts():
    """``import turbolift`` loads it, and the platforms reach the worker side only through it."""
    third_party = _imports_of("turbolift._worker.launcher")
    allowed_own = {"turbolift.errors", "turbolift._worker.forked", "turbolift._worker.template"}
    assert third_party <= allowed_own, f"the launcher imports {sorted(third_party - allowed_own)}"
    assert _imports_of("turbolift._worker.forked") <= {"turbolift._worker.template"}
    assert not _imports_of("turbolift._worker.template"), "the template module imports more than the stdlib"


@pytest.mark.parametrize("limit", [420])
def test_no_module_is_much_over_400_lines(limit):
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert all(lines <= limit for lines in long.values()), \
        {name: lines for name, lines in long.items() if lines > limit}
