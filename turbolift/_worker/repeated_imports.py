"""What a worker's imports of the program's modules print, log and warn: held, then sorted by how each ended.

A worker imports modules the program has imported already: the function's
module to load it, and the modules of the classes and functions an argument
refers to, to unpickle it. The program showed what its own imports printed,
logged and warned. So while a :class:`RepeatedImports` scope is open on a
thread, what code running inside an import makes there is held, each event
under the outermost module being imported; when the scope ends:

* an import that failed (its module is not in ``sys.modules``) gives all it
  held, its sub-imports' included, to the call: it failed here and not in
  the program, and what it made often says why;
* one that succeeded gives only its warnings, marked as made at import: the
  caller shows such a warning unless the program showed one of the same
  category and message (a worker's environment may differ: a fallback, a
  missing licence); what it printed and logged is taken to repeat the
  program's and is dropped.

What runs outside an import (``__setstate__``, the function's body) is not
held. Only writes to ``sys.stdout``/``sys.stderr``, log records and warnings
are held: what is written to the file descriptors is not seen.
"""
from __future__ import annotations

import importlib
import logging
import sys
import threading
from typing import Any, Optional, Protocol

from ..v1 import worker_pb2 as pb

_local = threading.local()   # .scope: the RepeatedImports open on this thread (absent: none)
# Every import of a module not yet in sys.modules runs the module's code below a frame of this.
_LOADING = importlib._bootstrap._load_unlocked.__code__   # type: ignore[attr-defined]


class Target(Protocol):
    """Where held events go (the call's events, or where the thread's output goes now)."""

    def write(self, stream: int, text: str) -> None: ...
    def log(self, record: logging.LogRecord) -> None: ...
    def warning(self, message: Any, category: type, filename: str, lineno: int, at_import: bool) -> None: ...
    def flush(self) -> None: ...


class RepeatedImports:
    """A scope holding what the imports it runs make on its thread (see the module's docstring).

    Scopes nest (an inner one hands what it gives to the outer one while
    that is inside an import); :func:`reset` closes any an interrupt left
    open. At most MAX_CHARS of text are held; what is over is counted.
    """

    __slots__ = ("events", "failed", "left_out", "_size", "_outer")
    MAX_CHARS = 1 << 20

    def __init__(self) -> None:
        self.events: list[tuple] = []   # (module, kind, *arguments)
        self.failed: frozenset = frozenset()
        self.left_out = 0
        self._size = 0
        self._outer: Optional[RepeatedImports] = None

    def __enter__(self) -> "RepeatedImports":
        self._outer = getattr(_local, "scope", None)
        _local.scope = self
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _local.scope = self._outer
        self.failed = frozenset(module for module, *_ in self.events if module not in sys.modules)

    def hold(self, module: str, kind: str, *arguments: Any) -> None:
        size = sum(len(part) for part in arguments if isinstance(part, str)) or 1
        if self._size + size > self.MAX_CHARS:
            self.left_out += 1
            return
        self._size += size
        self.events.append((module, kind, *arguments))

    def give(self, target: Target) -> None:
        """Send what the failed imports held, and the warnings of those that succeeded (once ended)."""
        for module, kind, *arguments in self.events:
            if module in self.failed:
                if kind == "warning":
                    target.warning(*arguments, at_import=False)
                else:
                    getattr(target, kind)(*arguments)
            elif kind == "warning":
                target.warning(*arguments, at_import=True)
        if self.left_out and self.failed:
            target.write(pb.OutputChunk.STDERR, f"(turbolift: {self.left_out} more writes, records and "
                                                "warnings of this import were not kept)\n")
        target.flush()


def holding() -> Optional[tuple[RepeatedImports, str]]:
    """``(scope, module)`` when the current thread runs inside an import in an open scope, else None;
    ``module`` is the outermost one being imported."""
    scope = getattr(_local, "scope", None)
    if scope is None:
        return None
    outermost = None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _LOADING:
            outermost = frame
        frame = frame.f_back
    if outermost is None:
        return None
    spec = outermost.f_locals.get("spec")
    return scope, str(getattr(spec, "name", "?"))


def reset() -> None:
    """Close any scope left open on this thread (where a call starts and ends)."""
    _local.scope = None


def formatted(record: logging.LogRecord) -> tuple[str, str]:
    """``(message, exc_text)`` of ``record``, formatted as the worker sends them ("" for no traceback)."""
    try:
        message = record.getMessage()
    except Exception as exc:  # msg % args failed: say so rather than lose the record
        message = f"{record.msg!r} % {record.args!r} could not be formatted: {exc}"
    exc_text = record.exc_text or ""
    if record.exc_info and not exc_text:
        exc_text = logging.Formatter().formatException(record.exc_info)
    return message, exc_text


def plain_record(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` formatted now, holding no arguments and no traceback (nor its frames)."""
    message, exc_text = formatted(record)
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg, copy.args, copy.exc_info, copy.exc_text, copy.stack_info = \
        message, None, None, exc_text or None, record.stack_info
    return copy
