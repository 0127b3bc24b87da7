"""The globals a function shipped by value reads, so that rebinding one ships it anew.

A function of ``__main__`` (or a closure) travels by value with the values
of the globals it reads, and with it, by value too, the functions and
classes of ``__main__`` it uses: a helper it calls, a class whose static
method it calls, the functions of its closure. What those read was
serialised as well, so rebinding a global that any of them reads changes
what the worker must run: all of them are watched, not only the function's
own. Functions and classes of importable modules travel by reference and
run the module's own code on the worker: nothing of theirs is watched.
"""
from __future__ import annotations

import types
from typing import Any, Iterator

from .._wire.by_value import travels_by_value

# Functions and classes followed from one function at most: a bound on the walk, not a limit
# a program meets (a script's helpers number in the tens).
MAX_FOLLOWED = 2000


def global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the functions nested in it) may read as globals."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= global_names(constant)
    return names


def watched_globals(function: Any) -> tuple:
    """``(namespace, name, value)`` of each global that ``function``, and the functions and classes
    travelling by value with it, read, as they are now; in a stable order."""
    found: dict = {}
    followed: set = set()
    todo = [function]
    while todo and len(followed) < MAX_FOLLOWED:
        current = todo.pop()
        if id(current) in followed:
            continue
        followed.add(id(current))
        if isinstance(current, type):   # (its bases' methods travel with it)
            todo.extend(base for base in current.__bases__ if _travels_by_value(base))
        for fn in _functions_of(current):
            namespace = getattr(fn, "__globals__", None)
            code = getattr(fn, "__code__", None)
            if not isinstance(namespace, dict) or code is None:
                continue
            for name in sorted(global_names(code)):
                if name in namespace:
                    value = namespace[name]
                    found.setdefault((id(namespace), name), (namespace, name, value))
                    if _travels_by_value(value):
                        todo.append(value)
            for cell in fn.__closure__ or ():
                try:
                    contents = cell.cell_contents
                except ValueError:   # (a cell not yet filled)
                    continue
                if _travels_by_value(contents):
                    todo.append(contents)
    return tuple(found[key] for key in sorted(found, key=lambda key: (key[0], key[1])))


def _travels_by_value(value: Any) -> bool:
    if not isinstance(value, (types.FunctionType, type)):
        return False
    return travels_by_value(getattr(value, "__module__", None), getattr(value, "__qualname__", ""))


def _functions_of(value: Any) -> Iterator[types.FunctionType]:
    """A function itself; a class's methods, static and class methods and property accessors."""
    if isinstance(value, types.FunctionType):
        yield value
        return
    if not isinstance(value, type):
        return
    for member in vars(value).values():
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            accessors = (member.fget, member.fset, member.fdel)
            yield from (f for f in accessors if isinstance(f, types.FunctionType))
        elif isinstance(member, types.FunctionType):
            yield member
