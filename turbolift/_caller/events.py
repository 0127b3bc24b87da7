"""What a remote call printed, logged and warned, re-emitted in the caller as it arrives.

Output goes to the caller's ``sys.stdout``/``sys.stderr`` (whatever they
are at that moment: a terminal, pytest's capture, ``redirect_stdout``),
each line prefixed with the function and the worker, as Ray prefixes
``(pid=...)``, unless the prefix is switched off. Log records go through
the caller's own logging (its levels, filters and handlers decide); warnings
through its own ``warnings`` machinery (its filters, ``pytest.warns``).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import warnings
from typing import Any

from .._wire import local_paths, serialize
from ..v1 import worker_pb2 as pb
from . import shown_warnings

_LEVELS_REFRESH = 1.0
_levels_cache = ("", -1.0)
_levels_lock = threading.Lock()
_registries: dict[str, dict] = {}   # per remote file of no local module: the "once per place" memory


def levels_json() -> str:
    """The caller's logging levels as the worker needs them: {logger: level}, "" for the root.

    Recomputed at most once a second (a program rarely changes them, and
    walking every logger on every call would cost more than the call).
    """
    global _levels_cache
    text, when = _levels_cache
    now = time.monotonic()
    if now - when < _LEVELS_REFRESH:
        return text
    with _levels_lock:
        levels = {"": logging.getLogger().getEffectiveLevel()}
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                if logger.disabled:
                    levels[name] = logging.CRITICAL + 1
                elif logger.level != logging.NOTSET:
                    levels[name] = logger.level
        text = json.dumps(levels, sort_keys=True, separators=(",", ":"))
        _levels_cache = (text, now)
    return text


class Events:
    """Re-emits the events of one exchange; ``prefix`` names where they came from."""

    def __init__(self, label: str, worker: str, prefix: bool = True) -> None:
        self._prefix = f"({label} {worker}) " if prefix else ""
        self._line_start = {pb.OutputChunk.STDOUT: True, pb.OutputChunk.STDERR: True}

    def handle(self, frame: pb.ServerFrame, kind: str) -> bool:
        """Re-emit ``frame`` if it is an event (output, log, warning, heartbeat); else False."""
        if kind == "output":
            self.output(frame.output)
        elif kind == "log":
            self.log(frame.log)
        elif kind == "warning":
            self.warning(frame.warning)
        elif kind != "heartbeat":
            return False
        return True

    def output(self, chunk: pb.OutputChunk) -> None:
        target = sys.stderr if chunk.stream == pb.OutputChunk.STDERR else sys.stdout
        if not chunk.data:
            target.write(self._prefixed(chunk.stream, chunk.text))
            target.flush()
            return
        data = self._prefixed(chunk.stream, chunk.data)   # written to the worker's sys.stdout.buffer
        target.flush()
        buffer = getattr(target, "buffer", None)
        if buffer is None:   # (a stream the program put in place that has none)
            target.write(data.decode(getattr(target, "encoding", None) or "utf-8", "backslashreplace"))
            target.flush()
        else:
            buffer.write(data)
            buffer.flush()

    def _prefixed(self, stream: int, piece: Any) -> Any:
        """``piece`` (text or bytes) with the prefix before each line that starts in it."""
        if not self._prefix:
            return piece
        newline, prefix = ("\n", self._prefix) if isinstance(piece, str) else (b"\n", self._prefix.encode())
        starts = self._line_start[stream]
        self._line_start[stream] = piece.endswith(newline)
        return newline.join((prefix + line) if line and (index or starts) else line
                            for index, line in enumerate(piece.split(newline)))

    @staticmethod
    def log(record: pb.LogRecord) -> None:
        logger = logging.getLogger(record.logger or None)
        if not logger.isEnabledFor(record.level):
            return
        pathname = local_paths.local_path(record.pathname)
        filename = os.path.basename(pathname)
        made = logging.makeLogRecord({
            "name": record.logger or "root", "levelno": record.level,
            "levelname": logging.getLevelName(record.level), "msg": record.message, "args": None,
            "created": record.created, "msecs": (record.created % 1) * 1000, "pathname": pathname,
            "filename": filename, "module": os.path.splitext(filename)[0],
            "lineno": record.lineno, "funcName": record.func_name, "threadName": record.thread_name,
            "process": record.process, "exc_text": local_paths.local_traceback(record.exc_text) or None,
            "stack_info": record.stack_info or None,
        })
        logger.handle(made)

    @staticmethod
    def warning(record: pb.WarningRecord) -> None:
        if record.at_import and shown_warnings.shown(record.category_name, record.message):
            return   # the program's own import showed it (see repeated_imports on the worker)
        category: Any = None
        if record.category:
            try:
                category = serialize.loads(record.category)
            except Exception:
                category = None
        message = record.message
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category, message = UserWarning, f"{record.category_name}: {message}"
        found = local_paths.module_of(record.filename)
        if found is None:
            registry = _registries.setdefault(record.filename, {})
            warnings.warn_explicit(message, category, record.filename, record.lineno, registry=registry)
            return
        # As warnings.warn in that module would: its name for filters, its memory of places shown.
        path, module = found
        registry = module.__dict__.setdefault("__warningregistry__", {})
        warnings.warn_explicit(message, category, path, record.lineno, module=module.__name__,
                               registry=registry, module_globals=module.__dict__)
