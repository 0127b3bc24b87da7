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
import gc
import threading

# The fields of statements (and of except handlers and match cases) that hold statements.
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")
# CPython 3.11's AST constructor keeps its recursion depth per interpreter, not per thread: a parse
# that another thread's parse interrupts fails with "SystemError: AST constructor recursion depth
# mismatch" (python/cpython#106905). A parse is interrupted only where it runs Python code, which is
# a garbage collection's finalizers; so ours run one at a time with collections held off, and no
# other parse can break one of them. (One of ours can still break a parse of the program's that a
# collection interrupted: so the preload's thread never parses, see bundling.WouldParse.)
_parsing = threading.Lock()


def _parse(source: str) -> ast.Module:
    with _parsing:
        collecting = gc.isenabled()
        gc.disable()
        try:
            return ast.parse(source)
        finally:
            if collecting:
                gc.enable()


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
