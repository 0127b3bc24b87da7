"""The ``import`` statements of a module's source, and the module names they may refer to.

:func:`import_records` parses a source once and keeps only its import
statements, as JSON-able records that do not depend on the module's name
(so that the bundle cache can keep them per file); :func:`imported_names`
resolves records for one module. ``imported_names(import_records(s), m, p)``
is every absolute name an ``import`` statement anywhere in ``s`` (at any
depth: in functions, classes, ``if``/``try``/``with``/``match`` blocks) may
refer to. Only statements are walked, never expressions, since an import is
always a statement: a fraction of the nodes ``ast.walk`` would visit.
"""
from __future__ import annotations

import ast
import threading

# The fields of statements (and of except handlers and match cases) that hold statements.
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")
# CPython 3.11's AST constructor keeps its recursion depth per interpreter, not per thread: a parse
# that another thread's parse interrupts (where a garbage collection runs finalizers) fails with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). So the parses of
# the bundle builds take turns, and one that a parse of the program's own broke is made again. (One
# of ours can still break one of the program's: the preload's thread never parses, see
# bundling.WouldParse.) Reentrant: a signal handler may make a first call in the middle of a parse.
_parsing = threading.RLock()
_ATTEMPTS = 3


def _parse(source: str) -> ast.Module:
    with _parsing:
        for _ in range(_ATTEMPTS - 1):
            try:
                return ast.parse(source)
            except SystemError as exc:
                if "recursion depth mismatch" not in str(exc):
                    raise
        return ast.parse(source)


def import_records(source: str) -> list:
    """``[[level, module or None, [names]] ...]`` for ``from`` imports, ``[-1, name, []]`` for ``import``.

    A source that does not parse has no records.
    """
    if "import" not in source:   # every import statement holds the keyword
        return []
    try:
        tree = _parse(source)
    except (SyntaxError, ValueError):
        return []
    records: list = []
    stack: list = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            records.extend([-1, alias.name, []] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            records.append([node.level, node.module, [alias.name for alias in node.names]])
        else:
            for block in _BLOCKS:
                children = getattr(node, block, None)
                if isinstance(children, list):
                    stack.extend(children)
    return records


def _prefixes(dotted: str) -> list:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_names(records: list, module_name: str, is_package: bool) -> set[str]:
    """Absolute names of every module the import ``records`` of module ``module_name`` may refer to."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    found: set[str] = set()
    for level, module, names in records:
        if level < 0:
            found.update(_prefixes(module))
            continue
        if level:
            base_parts = package.split(".") if package else []
            if level - 1 > len(base_parts):
                continue
            base_parts = base_parts[:len(base_parts) - (level - 1)]
            base = ".".join(base_parts + ([module] if module else []))
        else:
            base = module or ""
        if not base:
            continue
        found.update(_prefixes(base))
        # `from pkg import name` may name a submodule
        found.update(f"{base}.{name}" for name in names if name != "*")
    return found
