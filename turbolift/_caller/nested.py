"""Nested calls, caller side: marked functions called by a function that runs on a worker.

The worker sends them on the stream of the outer call (NestedCall frames);
the caller submits each to the cluster as any call, with the outer call's
deadline, and answers on the same stream (NestedReply frames) when it is
done. When the outer call ends, is cancelled or times out, the nested calls
it started and that are still running are cancelled.

A NestedCall with ``pull`` set asks for the next item of an iterator the
call was passed (:mod:`turbolift._wire.streamed`): it is taken here, at
once, in the thread that waits for the call, as the function would take it
locally. One with ``stdin`` set reads the caller's standard input
(:mod:`turbolift._worker.stdin`) in the same way.
"""
from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
from typing import Any, Callable, Optional

from .. import _runtime
from .._wire import bulk, serialize
from .._wire.chunked import framed
from .._wire.frames import client_frame
from .._wire.outcomes import pack_exception
from ..v1 import worker_pb2 as pb
from .calls import remaining
from .session import Stream


class NestedHost:
    """The nested calls of one exchange."""

    def __init__(self, deadline: Optional[float], streams: Optional[dict] = None,
                 ship: Optional[Callable[[set], list]] = None) -> None:
        self._deadline = deadline
        self._streams = streams or {}
        self._ship = ship
        self._parts: dict[int, tuple[bytes, bytearray]] = {}
        self._futures: set[cf.Future] = set()
        self._lock = threading.Lock()
        self._closed = False

    def received(self, frame: pb.NestedCall, stream: Stream) -> None:
        if frame.pull:
            self._pull(frame.id, frame.pull, stream)
            return
        if frame.stdin:
            self._read_stdin(frame.id, frame.stdin, frame.stdin_size, stream)
            return
        function, buffer = self._parts.get(frame.id, (frame.function, bytearray()))
        buffer += frame.data
        if not frame.last:
            self._parts[frame.id] = (function, buffer)
            return
        self._parts.pop(frame.id, None)
        try:
            target = serialize.loads(function)
            args, kwargs = serialize.loads(buffer)
            left = remaining(self._deadline)
            if left is not None:   # the outer call's deadline bounds it, and so does its own timeout
                own = getattr(target, "timeout", None)
                target = target.options(timeout=left if own is None else min(own, left))
            with _runtime.user_code():   # it goes to the cluster, as the user's own call would
                future = target.submit(*args, **kwargs)
        except BaseException as exc:
            self._answer(frame.id, stream, False, exc)
            return
        with self._lock:
            if self._closed:
                future.cancel()
                return
            self._futures.add(future)
        future.add_done_callback(lambda done: self._done(frame.id, stream, done))

    def _pull(self, call_id: int, number: int, stream: Stream) -> None:
        iterator = self._streams.get(number)
        if iterator is None:
            self._answer(call_id, stream, False, LookupError(f"the call has no streamed argument {number}"))
            return
        try:
            with _runtime.user_code():   # the iterator's own code: its marked functions go remote
                item = next(iterator)
        except BaseException as exc:   # StopIteration included: the worker's iteration ends with it
            self._answer(call_id, stream, False, exc)
        else:
            self._answer(call_id, stream, True, item)

    def _read_stdin(self, call_id: int, method: str, size: int, stream: Stream) -> None:
        """What the call reads from standard input is read here, from the caller's, as locally."""
        try:
            if method not in ("readline", "read", "buffer.readline", "buffer.read"):
                raise ValueError(f"a worker asked for sys.stdin.{method}: only (buffer.)readline and read "
                                 "are served")
            if sys.stdin is None:
                raise RuntimeError("input(): lost sys.stdin")   # (as input() says locally)
            source = sys.stdin.buffer if method.startswith("buffer.") else sys.stdin
            text = _read_beside(getattr(source, method.rpartition(".")[2]), size, self._deadline)
        except BaseException as exc:
            self._answer(call_id, stream, False, exc)
        else:
            self._answer(call_id, stream, True, text)

    def _done(self, call_id: int, stream: Stream, future: cf.Future) -> None:
        with self._lock:
            self._futures.discard(future)
        try:
            value = future.result()
        except BaseException as exc:
            self._answer(call_id, stream, False, exc)
        else:
            self._answer(call_id, stream, True, value)

    def _answer(self, call_id: int, stream: Stream, ok: bool, value: Any) -> None:
        modules: set = set()
        activate: list = []
        try:
            data = serialize.dumps_payload(value if ok else pack_exception(value), for_worker=True,
                                           what="nested result", modules=modules)
            if self._ship is not None and modules:   # (project modules the call did not ship: send them)
                activate = self._ship(modules)
        except BaseException as exc:
            ok, data = False, serialize.dumps(pack_exception(exc), for_worker=True)
        for part, first, last in framed(data):
            frame = client_frame("nested_reply", id=call_id, ok=ok, size=len(data) if first else 0, last=last,
                                 activate=activate if first else ())
            stream.send(bulk.encoded(frame, "nested_reply", part))

    def close(self) -> None:
        """The outer call ended: cancel what it started and did not wait for."""
        with self._lock:
            self._closed = True
            futures, self._futures = self._futures, set()
        for future in futures:
            future.cancel()


def _read_beside(read: Callable[[int], Any], size: int, deadline: Optional[float]) -> Any:
    """``read(size)`` in a daemon thread of its own, waited for here until the call's ``deadline``: a call
    that times out while it waits for input ends at its deadline, and a program that ends meanwhile (Ctrl-C
    while a submitted call reads) is not kept alive by this thread."""
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = read(size)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="turbolift-stdin", daemon=True).start()
    while not done.wait(0.25):
        if not threading.main_thread().is_alive():
            raise EOFError("the program ended while a call waited for its standard input")
        if remaining(deadline) == 0:
            raise TimeoutError("the call's deadline passed while it waited for standard input")
    if "error" in box:
        raise box["error"]
    return box["value"]
