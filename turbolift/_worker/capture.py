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

A worker imports modules the program has imported already: the function's
module to load it, and the modules of the classes and functions an argument
refers to, to unpickle it. The program showed what those imports printed,
logged and warned; the worker's repetition of it is held back
(:class:`RepeatedImports`) and shown only if the import fails there, where it
often says why.
"""
from __future__ import annotations

import importlib
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

STDOUT, STDERR = pb.OutputChunk.STDOUT, pb.OutputChunk.STDERR
MAX_SAME_WARNING = 100        # forwarded per call and location; more are counted, not sent
_DEFAULT_LEVEL = logging.WARNING

# thread id -> the events of the call it runs (each thread writes only its own key)
_sinks: dict[int, "Events"] = {}
_output_lock = threading.Lock()   # the buffers of every call's output (rarely contended)
_installed = False
# Every import of a module not yet in sys.modules runs the module's code below a frame of this.
_LOADING = importlib._bootstrap._load_unlocked.__code__   # type: ignore[attr-defined]
_local = threading.local()   # .held: the RepeatedImports open on this thread (absent: none)


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

    def _send_text(self, stream: int, text: str) -> None:
        step = FRAME_DATA // 4   # characters: up to 4 bytes each in UTF-8
        for start in range(0, len(text), step):
            self._emit(server_frame("output", stream=stream, text=text[start:start + step]))

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
        try:
            message = record.getMessage()
        except Exception as exc:  # msg % args failed: say so rather than lose the record
            message = f"{record.msg!r} % {record.args!r} could not be formatted: {exc}"
        exc_text = record.exc_text or ""
        if record.exc_info and not exc_text:
            exc_text = logging.Formatter().formatException(record.exc_info)
        self.flush()  # keep the order of output and records
        self._emit(server_frame("log",
            logger=record.name, level=record.levelno, message=message, created=record.created,
            exc_text=exc_text, pathname=record.pathname or "", lineno=record.lineno or 0,
            func_name=record.funcName or "", thread_name=record.threadName or "",
            stack_info=record.stack_info or "", process=record.process or 0))

    # -- warnings ----------------------------------------------------------------
    def warning(self, message: Any, category: type, filename: str, lineno: int) -> None:
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
            message=text, filename=filename or "", lineno=lineno or 0))


class RepeatedImports:
    """While open on a thread, what the imports it starts print, log and warn is held, not shown.

    For the worker's imports of modules the program imported too (see the
    module's docstring). Only what runs inside an import is held: a warning
    that ``__setstate__`` raises while unpickling is the call's own, and so is
    what the function's body prints. :meth:`replay` shows what was held, as if
    made now; a scope that is left by an exception replays by itself, so a
    failed import's reasons reach the call. Scopes nest; :func:`attach` and
    :func:`detach` close any left open (by an interrupt landing in ``__exit__``).
    """

    __slots__ = ("events", "left_out", "_size", "_outer", "_replay_on_failure")
    MAX_EVENTS = 10_000
    MAX_CHARS = 1 << 20

    def __init__(self, replay_on_failure: bool = True) -> None:
        self.events: list[tuple] = []
        self.left_out = 0
        self._size = 0
        self._outer: Optional[RepeatedImports] = None
        self._replay_on_failure = replay_on_failure

    def __enter__(self) -> "RepeatedImports":
        self._outer = getattr(_local, "held", None)
        _local.held = self
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        _local.held = self._outer
        if kind is not None and self._replay_on_failure:
            self.replay()

    def hold(self, event: tuple) -> None:
        size = len(event[2]) if event[0] == "output" else 1
        if len(self.events) >= self.MAX_EVENTS or self._size + size > self.MAX_CHARS:
            self.left_out += 1
            return
        self._size += size
        self.events.append(event)

    def joined(self, earlier: Optional["RepeatedImports"]) -> "RepeatedImports":
        """What ``earlier`` held (an earlier failed try of the same import), then what this holds and
        it did not: a retried import does not repeat what succeeded the first time, and says it once."""
        if earlier is None:
            return self
        seen = set(map(_event_key, earlier.events))
        for event in self.events:
            if _event_key(event) not in seen:
                earlier.hold(event)
        earlier.left_out += self.left_out
        return earlier

    def replay(self, events: Optional[Events] = None) -> None:
        """Show what was held: to ``events``, else where this thread's output goes now."""
        for event in self.events:
            kind, *rest = event
            if events is None:
                {"output": _output, "log": _record, "warning": _warning}[kind](*rest)
            elif kind == "output":
                events.write(*rest)
            elif kind == "log":
                if events.wants(rest[0].name, rest[0].levelno):
                    events.log(rest[0])
            else:
                events.warning(*rest)
        if self.left_out:
            note = (f"(turbolift: {self.left_out} more writes, records and warnings of this import "
                    "were not kept)\n")
            events.write(STDERR, note) if events is not None else _output(STDERR, note)
        if events is not None:
            events.flush()


def _event_key(event: tuple) -> tuple:
    if event[0] == "log":
        record = event[1]
        return ("log", record.name, record.levelno, str(record.msg), record.pathname, record.lineno)
    if event[0] == "warning":
        return ("warning", event[2], str(event[1]), event[3], event[4])
    return event


def _held() -> Optional[RepeatedImports]:
    """The scope holding what this thread makes now: one is open, and the code runs inside an import."""
    held = getattr(_local, "held", None)
    if held is None:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _LOADING:
            return held
        frame = frame.f_back
    return None


def repeating_imports(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` (unpickling what the caller sent) in a :class:`RepeatedImports` scope."""
    with RepeatedImports():
        return fn(*args)


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
    _local.held = None
    if events is not None:
        _sinks[threading.get_ident()] = events


def detach(events: Optional[Events]) -> None:
    """End :func:`attach`; send what ``events`` still buffers."""
    _local.held = None
    if events is not None:
        _sinks.pop(threading.get_ident(), None)
        events.flush()


def _output(stream: int, text: str) -> None:
    held = _held()
    if held is not None:
        held.hold(("output", stream, text))
        return
    sink = _sink()
    if sink is None:
        _originals[stream].write(text)
    else:
        sink.write(stream, text)


def _record(record: logging.LogRecord) -> None:
    held = _held()
    if held is not None:
        held.hold(("log", record))
        return
    sink = _sinks.get(record.thread or 0) or _sink()
    if sink is not None:
        if sink.wants(record.name, record.levelno):
            sink.log(record)
    elif record.levelno >= logging.lastResort.level and len(logging.getLogger().handlers) == 1:
        logging.lastResort.handle(record)  # what Python does when nothing is configured


def _warning(message: Any, category: type, filename: str, lineno: int) -> None:
    held = _held()
    if held is not None:
        held.hold(("warning", message, category, filename, lineno))
        return
    sink = _sink()
    if sink is not None:
        sink.warning(message, category, filename, lineno)
    else:
        _original_showwarning(message, category, filename, lineno)


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` on a worker."""

    def __init__(self, original: Any, stream: int) -> None:
        self._original = original
        self._stream = stream
        _originals[stream] = original

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
