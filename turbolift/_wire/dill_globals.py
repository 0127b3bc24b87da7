"""dill's search for the globals a function uses, without swapping ``sys.stdout``.

dill (0.4.1) finds the global names a function refers to by printing its
disassembly (``dis.dis``) into a ``sys.stdout`` it swaps for a buffer,
then parsing the text. ``sys.stdout`` belongs to the whole process, so
while one thread does that:

* what other threads print goes into dill's buffer and is lost;
* two threads doing it at once restore each other's buffers, so the
  disassembly reaches the program's real output ("82 RETURN_VALUE" at the
  end of a program's output was how this was found), and ``sys.stdout``
  can be left pointing at a dead buffer, swallowing everything printed
  after.

turbolift serialises functions by value with dill from many threads (a
program's concurrent calls, nested calls served for workers), and a
worker replaces ``sys.stdout`` with its own router, so :func:`install`
replaces ``dill.detect.nestedglobals`` with the same search done on
``dis.get_instructions``: the same names, nothing printed.
"""
from __future__ import annotations

import dis
import types
from typing import Any

import dill.detect

_GLOBAL_OPS = frozenset(name for name in dis.opname if "_GLOBAL" in name)


def nestedglobals(func: Any, recurse: bool = True) -> list:
    """The names of the globals ``func`` (a function, method, frame, traceback or code) refers to,
    in its nested code objects too when ``recurse``; what dill's own function returns."""
    code = dill.detect.code(func)
    if code is None:
        return []
    names = {instruction.argval for instruction in dis.get_instructions(code)
             if instruction.opname in _GLOBAL_OPS}
    for constant in code.co_consts:
        if recurse and isinstance(constant, types.CodeType):
            names.update(nestedglobals(constant, recurse=True))
    return list(names)


def install() -> None:
    """Make dill use :func:`nestedglobals` (``dill.detect.globalvars`` looks it up when called)."""
    dill.detect.nestedglobals = nestedglobals
