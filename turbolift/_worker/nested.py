"""Calls of marked functions made by a function running on a worker (nested calls).

They reach the cluster through the caller: the worker sends a NestedCall
frame on the stream of the call that made it, the caller sends it to the
cluster like any call (the same authentication, the outer call's deadline,
cancelled with the outer call) and answers with NestedReply frames. While a
function waits for a nested result its slot is lent to other calls, so a
fan-out deeper than the cluster has slots cannot deadlock. Outside a call
(at import time, or in a thread the function started) a marked function
runs inline, as it would locally.

Reading the stream moves to a pump thread at the first nested call, because
the thread that would read it is busy running the outer function.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional

from .._wire import bulk, serialize
from .._wire.chunked import framed
from .._wire.frames import server_frame
from .._wire.outcomes import unpack_exception
from ..errors import WorkerLost
from ..v1 import worker_pb2 as pb
from . import capture
from .cancel import Ticket, Watchdog

_current = threading.local()   # .calls (NestedCalls) and .ticket of the call this thread runs
MAP_AHEAD = 8                  # nested map: calls in flight at once


class NestedFuture(cf.Future):
    """The future of a nested call; waiting on it lends the waiting call's slot."""

    def __init__(self, watchdog: Watchdog, ticket: Optional[Ticket],
                 activate: Optional[Callable[[Iterable[str]], None]] = None) -> None:
        super().__init__()
        self._watchdog = watchdog
        self._ticket = ticket
        self._activate = activate   # makes bundles the caller uploaded for the value importable
        self._bundles: tuple = ()
        self._owner = threading.get_ident()   # only this thread's slot may be lent
        self._raw: Optional[bytearray] = None
        self._decoded = False
        self._value: Any = None
        self._decode_lock = threading.Lock()

    def deliver(self, ok: bool, data: bytearray, bundles: tuple = ()) -> None:
        """In the pump thread: the reply arrived (decoded when someone asks for it); ``bundles`` are those
        the caller uploaded for it (see turbolift._caller.late_bundles)."""
        self._bundles = bundles
        if ok:
            self._raw = data
            self.set_result(None)
        else:
            try:
                self._activate_bundles()
                self.set_exception(unpack_exception(capture.repeating_imports(serialize.loads, data)))
            except Exception as exc:
                self.set_exception(exc)

    def result(self, timeout: Optional[float] = None) -> Any:
        with self._watchdog.lend(self._ticket if threading.get_ident() == self._owner else None):
            super().result(timeout)
        with self._decode_lock:
            if not self._decoded:
                self._activate_bundles()
                raw = self._raw
                self._value = capture.repeating_imports(serialize.loads, raw) if raw is not None else None
                self._raw, self._decoded = None, True
        return self._value

    def _activate_bundles(self) -> None:
        if self._bundles and self._activate is not None:
            self._activate(self._bundles)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        with self._watchdog.lend(self._ticket if threading.get_ident() == self._owner else None):
            return super().exception(timeout)


class NestedCalls:
    """The nested calls of the calls run on one Session."""

    def __init__(self, session: Any) -> None:  # a turbolift._worker.session.Session
        self._session = session
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, NestedFuture] = {}
        self._parts: dict[int, bytearray] = {}
        self._bundles: dict[int, tuple] = {}   # reply id -> the bundles its value needs
        self._lost = False
        self.epoch = 0   # which call of the session runs (or streams its items) now

    def enter(self, ticket: Ticket) -> None:
        """The current thread runs a call of this session (so its nested calls go out) until leave()."""
        self.epoch += 1
        _current.calls, _current.ticket = self, ticket

    @staticmethod
    def leave() -> None:
        _current.calls = _current.ticket = None

    def start(self, function: Any, args: tuple, kwargs: dict, ticket: Optional[Ticket]) -> NestedFuture:
        """Send a call of the marked ``function`` to the caller; return its future."""
        data = serialize.dumps_payload((args, kwargs), for_worker=False, what="arguments")
        pickled = serialize.dumps(function, for_worker=False, what="function")
        future, call_id = self._register(ticket, "nested calls cannot reach it")
        for part, first, last in framed(data):
            frame = server_frame("nested_call", id=call_id, function=pickled if first else b"",
                                 size=len(data) if first else 0, last=last)
            self._session.send(bulk.encoded(frame, "nested_call", part))
        return future

    def pull(self, number: int, ticket: Optional[Ticket], epoch: int) -> NestedFuture:
        """Ask the caller for the next item of streamed argument ``number`` of the call of ``epoch``;
        return its future."""
        if epoch != self.epoch:
            raise RuntimeError("an iterator streamed from the caller was read after the call it was passed "
                               "to ended: read it during the call (or pass a list)")
        future, call_id = self._register(ticket, "its iterator cannot be read")
        self._session.send(server_frame("nested_call", id=call_id, pull=number, last=True))
        return future

    def read_stdin(self, method: str, size: int, ticket: Optional[Ticket]) -> NestedFuture:
        """Ask the caller for ``sys.stdin.<method>(size)`` (``readline`` or ``read``); return its future."""
        future, call_id = self._register(ticket, "its standard input cannot be read")
        self._session.send(server_frame("nested_call", id=call_id, stdin=method, stdin_size=size, last=True))
        return future

    def _register(self, ticket: Optional[Ticket], lost: str) -> tuple[NestedFuture, int]:
        """A future for a request to the caller, under a fresh id; the pump reads its answer."""
        future = NestedFuture(self._session.watchdog, ticket, self._session.activate_bundles)
        with self._lock:
            if self._lost:
                raise WorkerLost(f"the caller of this call went away; {lost}")
            call_id = next(self._ids)
            self._waiting[call_id] = future
        self._session.start_pump(self._route)
        return future, call_id

    def _route(self, frame: Optional[pb.ClientFrame]) -> bool:
        """In the pump thread: take nested replies; None means the stream ended."""
        if frame is None:
            with self._lock:
                self._lost = True
                waiting, self._waiting = self._waiting, {}
            for future in waiting.values():
                if not future.done():
                    future.set_exception(WorkerLost("the caller went away before a nested call finished"))
            return True
        if frame.WhichOneof("frame") != "nested_reply":
            return False
        reply = frame.nested_reply
        buffer = self._parts.setdefault(reply.id, bytearray())
        buffer += reply.data
        if reply.activate:   # (on the first part)
            self._bundles[reply.id] = tuple(reply.activate)
        if reply.last:
            del self._parts[reply.id]
            bundles = self._bundles.pop(reply.id, ())
            with self._lock:
                future = self._waiting.pop(reply.id, None)
            if future is not None and not future.done():
                future.deliver(reply.ok, buffer, bundles)
        return True


def forget_calls() -> None:
    """In a child a call forked: the call's stream is the parent's, so no nested call, stdin read or
    pulled item can go through it here (the forking thread is the child's only one)."""
    _current.calls = _current.ticket = None


def running_calls() -> tuple[Optional[NestedCalls], Optional[Ticket]]:
    """The nested calls of the call the current thread runs, and its ticket (None, None: none runs)."""
    return getattr(_current, "calls", None), getattr(_current, "ticket", None)


class PulledIterator:
    """An iterator the caller passed as an argument: each ``next()`` asks the caller for one item
    (:mod:`turbolift._wire.streamed`), on the stream of the call it was passed to."""

    def __init__(self, number: int) -> None:
        calls, ticket = running_calls()
        if calls is None:
            raise TypeError("an iterator streamed from the caller can only be read by the call it was "
                            "passed to")
        self._calls, self._ticket, self._number = calls, ticket, number
        self._epoch = calls.epoch
        self._done = False

    def __iter__(self) -> "PulledIterator":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        try:
            return self._calls.pull(self._number, self._ticket, self._epoch).result()
        except StopIteration:
            self._done = True
            raise

    def __reduce__(self) -> Any:
        raise TypeError("an iterator streamed from the caller cannot be sent back: return a list of its "
                        "items, or a generator over it")


class NestedStub:
    """What a marked function is bound to on a worker (``turbolift._runtime`` in worker mode)."""

    def __init__(self, function: Any) -> None:
        self._function = function

    def with_function(self, function: Any) -> "NestedStub":
        return NestedStub(function)

    def call(self, args: tuple, kwargs: dict) -> Any:
        calls, ticket = running_calls()
        if calls is None:
            return self._function.__wrapped__(*args, **kwargs)
        return calls.start(self._function, args, kwargs, ticket).result()

    def submit(self, args: tuple, kwargs: dict) -> cf.Future:
        calls, ticket = running_calls()
        if calls is not None:
            return calls.start(self._function, args, kwargs, ticket)
        future: cf.Future = cf.Future()
        try:
            future.set_result(self._function.__wrapped__(*args, **kwargs))
        except BaseException as exc:  # stored, as an executor would
            future.set_exception(exc)
        return future

    def map(self, iterables: tuple, timeout: Optional[float] = None,
            chunksize: Optional[int] = None) -> Iterator:
        calls, _ = running_calls()
        if calls is None:
            return (self._function.__wrapped__(*args) for args in zip(*iterables))
        return _nested_map(self, zip(*iterables))


def _nested_map(stub: NestedStub, items: Iterable[tuple]) -> Iterator:
    """Results in order, with at most MAP_AHEAD nested calls in flight. What the input raises while
    drawn ahead (or an item that cannot be sent) is raised after the results before it, as locally."""
    pending: deque = deque()
    source = iter(items)
    failure: Optional[BaseException] = None

    ended = False

    def draw(count: int) -> None:
        nonlocal failure, ended
        if failure is not None or ended:
            return
        drawn = 0
        try:
            for args in itertools.islice(source, count):
                pending.append(stub.submit(args, {}))
                drawn += 1
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            failure = exc
        ended = drawn < count   # (the input ends at its first StopIteration, as locally)

    draw(MAP_AHEAD)
    while pending:
        future = pending.popleft()
        draw(1)
        yield future.result()
    if failure is not None:
        raise failure
