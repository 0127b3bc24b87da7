"""Forwarding what a call prints, logs and warns to its caller.

While a call runs, the writes of its thread to ``sys.stdout`` and
``sys.stderr``, the log records it makes and the warnings it raises go to
the call's :class:`Events`, which sends them on the call's stream as they
happen: output line by line, records and warnings one by one. What no call
owns (the worker's own messages, threads user code started without a call)
goes where it would without turbolift; when exactly one call runs, threads
it started are taken to be its own.

The caller decides what to show: it re-emits records through its own
logging (its levels and handlers) and warnings through its own ``warnings``
filters. So the worker lets every warning through to the router
(``simplefilter("always")``, deduplicated per call), and lowers its loggers'
levels to what the caller's levels need.

What a worker's imports of the program's own modules make is held and sorted
first (:mod:`.repeated_imports`).
"""
from __future__ import annotations

import io
import logging
import sys
import threading
import warnings
from typing import Any, Callable, Optional

from .._wire import serialize
from .._wire.frames import server_frame
from .._wire.protocol import FRAME_DATA
from ..v1 import worker_pb2 as pb
from . import repeated_imports

STDOUT, STDERR = pb.OutputChunk.STDOUT, pb.OutputChunk.STDERR
MAX_SAME_WARNING = 100        # forwarded per call and location; more are counted, not sent
_DEFAULT_LEVEL = logging.WARNING

# thread id -> the events of the call it runs (each thread writes only its own key)
_sinks: dict[int, "Events"] = {}
_output_lock = threading.Lock()   # the buffers of every call's output (rarely contended)
_installed = False


class Events:
    """The events of one call; ``emit(frame)`` sends a ServerFrame (thread-safe, may block).

    Made for every call that forwards events, most of which send none: its
    state is created on first use.
    """

    __slots__ = ("_emit", "_levels", "_effective", "_pending", "_warned")

    def __init__(self, emit: Callable[[pb.ServerFrame], None], levels: Optional[dict] = None) -> None:
        self._emit = emit
        self._levels = levels or {}
        self._effective: Optional[dict[str, int]] = None
        self._pending: Optional[dict[int, str]] = None
        self._warned: Optional[dict[tuple, int]] = None

    # -- output ----------------------------------------------------------------
    def write(self, stream: int, text: str) -> None:
        """Buffer ``text``; send every complete line at once."""
        with _output_lock:
            if self._pending is None:
                self._pending = {STDOUT: "", STDERR: ""}
            pending = self._pending[stream] + text
            cut = pending.rfind("\n") + 1
            if cut == 0 and len(pending) < FRAME_DATA // 4:
                self._pending[stream] = pending
                return
            cut = cut or len(pending)
            self._pending[stream] = pending[cut:]
            ready = pending[:cut]
        self._send_text(stream, ready)

    def flush(self) -> None:
        """Send what is buffered (the call ended, or the user flushed mid-line)."""
        if self._pending is None:
            return
        with _output_lock:
            ready = [(stream, text) for stream, text in self._pending.items() if text]
            self._pending = None
        for stream, text in ready:
            self._send_text(stream, text)

    def write_bytes(self, stream: int, data: bytes) -> None:
        """Send ``data``, written to the stream's buffer, at once: after the text buffered before it."""
        with _output_lock:
            before = self._pending[stream] if self._pending is not None else ""
            if before:
                self._pending[stream] = ""
        if before:
            self._send_text(stream, before)
        for start in range(0, len(data), FRAME_DATA):
            self._emit(server_frame("output", stream=stream, data=data[start:start + FRAME_DATA]))

    def _send_text(self, stream: int, text: str) -> None:
        step = FRAME_DATA // 4   # characters: up to 4 bytes each in UTF-8
        for start in range(0, len(text), step):
            piece = text[start:start + step]
            try:
                frame = server_frame("output", stream=stream, text=piece)
            except UnicodeEncodeError:   # (undecodable bytes a program read with surrogateescape: as bytes)
                frame = server_frame("output", stream=stream, data=piece.encode("utf-8", "surrogateescape"))
            self._emit(frame)

    # -- logging -----------------------------------------------------------------
    def wants(self, name: str, level: int) -> bool:
        """Whether the caller's levels let a record of logger ``name`` at ``level`` through."""
        if self._effective is None:
            self._effective = {}
        effective = self._effective.get(name)
        if effective is None:
            effective = self._effective[name] = self._level_of(name)
        return level >= effective

    def _level_of(self, name: str) -> int:
        while name:
            if name in self._levels:
                return self._levels[name]
            name = name.rpartition(".")[0]
        return self._levels.get("", _DEFAULT_LEVEL)

    def log(self, record: logging.LogRecord) -> None:
        message, exc_text = repeated_imports.formatted(record)
        self.flush()  # keep the order of output and records
        self._emit(server_frame("log",
            logger=record.name, level=record.levelno, message=message, created=record.created,
            exc_text=exc_text, pathname=record.pathname or "", lineno=record.lineno or 0,
            func_name=record.funcName or "", thread_name=record.threadName or "",
            stack_info=record.stack_info or "", process=record.process or 0))

    # -- warnings ----------------------------------------------------------------
    def warning(self, message: Any, category: type, filename: str, lineno: int,
                at_import: bool = False) -> None:
        """``at_import``: raised by a worker's import of a module the program imported (the caller
        shows it unless the program showed the same warning)."""
        text = str(message)
        key = (category, text, filename, lineno)
        if self._warned is None:
            self._warned = {}
        seen = self._warned.get(key, 0)
        self._warned[key] = seen + 1
        if seen >= MAX_SAME_WARNING:
            return
        try:
            pickled = serialize.dumps(category, for_worker=False)
        except Exception:
            pickled = b""
        self.flush()
        self._emit(server_frame("warning",
            category=pickled, category_name=f"{category.__module__}.{category.__qualname__}",
            message=text, filename=filename or "", lineno=lineno or 0, at_import=at_import))


class _Here:
    """A :class:`~.repeated_imports.Target`: ``events``, else where this thread's output goes now."""

    def __init__(self, events: Optional[Events]) -> None:
        self.events = events

    def write(self, stream: int, text: str) -> None:
        if self.events is None:
            _output(stream, text)
        else:
            self.events.write(stream, text)

    def log(self, record: logging.LogRecord) -> None:
        if self.events is None:
            _record(record)
        elif self.events.wants(record.name, record.levelno):
            self.events.log(record)

    def warning(self, message: Any, category: type, filename: str, lineno: int, at_import: bool) -> None:
        if self.events is not None:
            self.events.warning(message, category, filename, lineno, at_import)
        elif not at_import:   # (one the program may have shown: only a caller can tell)
            _warning(message, category, filename, lineno)

    def flush(self) -> None:
        if self.events is not None:
            self.events.flush()


def give_held(scope: repeated_imports.RepeatedImports, events: Optional[Events] = None) -> None:
    """What ``scope`` gives, to ``events`` (None: this thread's call, or where its output goes now)."""
    if not scope.events:   # (nearly always: nothing was imported, or it made nothing)
        return
    scope.give(_Here(events if events is not None else _sinks.get(threading.get_ident())))


def repeating_imports(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` (unpickling what the caller sent) in a RepeatedImports scope, given where it ends."""
    scope = repeated_imports.RepeatedImports()
    try:
        with scope:
            return fn(*args)
    finally:
        give_held(scope)


def _sink() -> Optional[Events]:
    """The events of the call the current thread runs (or of the only call running)."""
    found = _sinks.get(threading.get_ident())
    if found is None and len(_sinks) == 1:
        try:
            found = next(iter(_sinks.values()))
        except (StopIteration, RuntimeError):  # changed meanwhile
            found = None
    return found


def attach(events: Optional[Events]) -> None:
    """Route the current thread's output, records and warnings to ``events`` (None: nowhere new)."""
    repeated_imports.reset()
    if events is not None:
        _sinks[threading.get_ident()] = events


def detach(events: Optional[Events]) -> None:
    """End :func:`attach`; send what ``events`` still buffers."""
    repeated_imports.reset()
    if events is not None:
        _sinks.pop(threading.get_ident(), None)
        events.flush()


def _output(stream: int, text: str) -> None:
    held = repeated_imports.holding()
    if held is not None:
        held[0].hold(held[1], "write", stream, text)
        return
    sink = _sink()
    if sink is None:
        _originals[stream].write(text)
    else:
        sink.write(stream, text)


def _record(record: logging.LogRecord) -> None:
    held = repeated_imports.holding()
    if held is not None:
        held[0].hold(held[1], "log", repeated_imports.plain_record(record))
        return
    sink = _sinks.get(record.thread or 0) or _sink()
    if sink is not None:
        if sink.wants(record.name, record.levelno):
            sink.log(record)
    elif record.levelno >= logging.lastResort.level and len(logging.getLogger().handlers) == 1:
        logging.lastResort.handle(record)  # what Python does when nothing is configured


def _warning(message: Any, category: type, filename: str, lineno: int) -> None:
    held = repeated_imports.holding()
    if held is not None:
        held[0].hold(held[1], "warning", str(message), category, filename, lineno)
        return
    sink = _sink()
    if sink is not None:
        sink.warning(message, category, filename, lineno)
    else:
        _original_showwarning(message, category, filename, lineno)


def _output_bytes(stream: int, data: bytes) -> None:
    if repeated_imports.holding() is not None:   # (an import's output: held as its text is)
        _output(stream, data.decode(_encoding(_originals[stream]), "backslashreplace"))
        return
    sink = _sink()
    if sink is not None:
        sink.write_bytes(stream, data)
        return
    original = _originals[stream]
    original.flush()
    buffer = getattr(original, "buffer", None)
    if buffer is None:
        original.write(data.decode(_encoding(original), "backslashreplace"))
    else:
        buffer.write(data)


def _encoding(stream: Any) -> str:
    return getattr(stream, "encoding", None) or "utf-8"


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` on a worker: text and bytes (its ``buffer``)
    reach the caller's stream in the order written; the rest is the real stream's."""

    def __init__(self, original: Any, stream: int) -> None:
        self._original = original
        self._stream = stream
        self._buffer = _BytesRouter(self, stream)
        _originals[stream] = original

    # (TextIOBase defines these as None or as raising: ask the real stream, as for anything else)
    encoding = property(lambda self: _encoding(self._original))
    errors = property(lambda self: getattr(self._original, "errors", None) or "strict")
    newlines = property(lambda self: getattr(self._original, "newlines", None))

    @property
    def buffer(self) -> "_BytesRouter":
        return self._buffer

    def fileno(self) -> int:   # (a child process given it writes to the worker's own output, as local)
        return self._original.fileno()

    def isatty(self) -> bool:
        return self._original.isatty()

    def write(self, text: str) -> int:
        _output(self._stream, text)
        return len(text)

    def flush(self) -> None:
        sink = _sink()
        if sink is not None:
            sink.flush()
        else:
            self._original.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, buffer ... as the real stream has them
        return getattr(self._original, name)


class _BytesRouter(io.RawIOBase):
    """``buffer`` of a :class:`_Router`: the bytes written travel as they are."""

    def __init__(self, text: _Router, stream: int) -> None:
        self._text = text
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:   # type: ignore[override]
        data = bytes(data)
        _output_bytes(self._stream, data)
        return len(data)

    def flush(self) -> None:
        self._text.flush()

    def fileno(self) -> int:
        return self._text.fileno()

    def isatty(self) -> bool:
        return self._text.isatty()


class _LogRouter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _record(record)


_original_showwarning = warnings.showwarning
_originals: dict[int, Any] = {STDOUT: sys.stdout, STDERR: sys.stderr}


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    if file is None:
        _warning(message, category, filename, lineno)
    else:
        _original_showwarning(message, category, filename, lineno, file, line)


def apply_levels(levels: dict) -> None:
    """Lower the worker's logger levels so that records the caller wants are made at all."""
    for name, level in levels.items():
        logger = logging.getLogger(name or None)
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)


def forget_calls() -> None:
    """In a child a call forked: no call runs here (its stream is the parent's), so what the child
    prints, logs and warns goes where it would without turbolift."""
    global _output_lock
    _sinks.clear()
    _output_lock = threading.Lock()   # (another thread may have held it at the fork)


def install() -> None:
    """Put the routers in place (once per worker process)."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.stdout = _Router(sys.stdout, STDOUT)
    sys.stderr = _Router(sys.stderr, STDERR)
    logging.getLogger().addHandler(_LogRouter())
    warnings.simplefilter("always")
    warnings.showwarning = _show_warning
