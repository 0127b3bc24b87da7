"""Iterators whose items a worker produces: what a remote generator (or ``map``, ``filter`` ...) gives.

The worker sends items only as the caller grants credit, so at most
``CREDIT`` items wait in the caller and the worker is at most one item
ahead: a slow consumer holds the producer back, an infinite generator is
fine. An exception raised by the generator arrives at the item where it
was raised. ``close()`` (or leaving a ``for`` loop early and dropping the
iterator) stops the generator on the worker, whose ``finally`` runs there.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Optional

import grpc

from .. import _runtime
from .._wire import serialize
from .._wire.frames import client_frame
from .._wire.outcomes import unpack_exception
from ..errors import WorkerLost, raised_on_worker
from ..v1 import worker_pb2 as pb
from .exchange import Exchange, Failed
from .failures import from_failure
from .session import StreamEnded

CREDIT = 64
CLOSE_SECONDS = 30.0


def _remote_error(error: pb.RemoteException) -> BaseException:
    return unpack_exception({"exception": error.exception, "type_name": error.type_name,
                             "message": error.message, "traceback": error.traceback})


class RemoteIterator:
    """The items of an iterator running on a worker, streamed on one Session.

    ``release(stream)`` hands the stream back to its connection once the
    iteration ended in order; ``discard(stream)`` cancels it otherwise.
    """

    def __init__(self, exchange: Exchange, what: str, release: Callable, discard: Callable) -> None:
        self._exchange = exchange
        self._what = what
        self._release = release
        self._discard = discard
        self._buffer: deque = deque()
        self._granted = 0
        self._received = 0
        self._done = False
        self._error: Optional[BaseException] = None

    def __iter__(self) -> "RemoteIterator":
        return self

    def __next__(self) -> Any:
        with _runtime.turbolift_code():
            while not self._buffer:
                if self._done:
                    error, self._error = self._error, None
                    if error is not None:
                        raise error
                    raise StopIteration
                self._fill()
            return serialize.loads(self._buffer.popleft())

    def _fill(self) -> None:
        """Grant credit when half of it was used, then wait for the next frame of items."""
        stream = self._exchange.stream
        outstanding = self._granted - self._received
        if outstanding <= CREDIT // 2:
            stream.send(client_frame("credit", items=CREDIT - outstanding))
            self._granted += CREDIT - outstanding
        try:
            frame = self._exchange.receive("item", "end")
        except (grpc.RpcError, StreamEnded) as exc:
            self._finish(False)
            raise WorkerLost(f"the worker producing the items of {self._what} was lost: {exc}",
                             worker=stream.address) from None
        except Failed as failed:
            self._finish(True)
            raise from_failure(failed.failure, stream.address, self._what) from None
        except BaseException:
            self._finish(False)
            raise
        if frame.WhichOneof("frame") == "end":
            if frame.end.HasField("error"):
                self._error = _remote_error(frame.end.error)
            self._finish(True)
            return
        item = frame.item
        if item.size:
            self._buffer.append(self._exchange.payload(b"", item.size))
            self._received += 1
        else:
            self._buffer.extend(item.values)
            self._received += len(item.values)

    def _finish(self, in_order: bool) -> None:
        if self._done:
            return
        self._done = True
        stream = self._exchange.stream
        if in_order:
            self._release(stream)
        else:
            self._discard(stream)

    def close(self) -> None:
        """Stop the iterator on the worker (its ``finally`` runs there); idempotent."""
        if self._done:
            return
        stream = self._exchange.stream
        self._buffer.clear()
        with _runtime.turbolift_code():
            try:
                stream.send(client_frame("stop"))
                stream.deadline = stream.last_frame + CLOSE_SECONDS
                while True:  # the items already on their way, then its end
                    frame = self._exchange.receive("item", "end")
                    if frame.WhichOneof("frame") == "end":
                        break
            except BaseException:
                self._finish(False)
                return
            self._finish(True)

    def __del__(self) -> None:
        # Dropped unfinished: cancel its stream (never block in a finaliser); the
        # worker closes the generator, and its finally runs there.
        if not self._done:
            self._done = True
            try:
                self._discard(self._exchange.stream)
            except Exception:
                pass


class LazyIterator:
    """The iterator of a generator function: nothing runs until the first item is asked for,
    as calling a generator function locally runs none of its body."""

    def __init__(self, start: Callable[[], Any]) -> None:
        self._start: Optional[Callable[[], Any]] = start
        self._iterator: Any = None

    def __iter__(self) -> "LazyIterator":
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            start, self._start = self._start, None
            if start is None:
                raise StopIteration
            self._iterator = iter(start())
        try:
            return next(self._iterator)
        except BaseException as exc:
            if not raised_on_worker(exc):
                raise
            raised = exc
        # The generator's own exception: its traceback here is turbolift's alone (the worker's is
        # among its causes), so it starts at this frame, as a local generator's starts at its own.
        raise raised.with_traceback(None)

    def close(self) -> None:
        self._start = None
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()


class AsyncRemoteIterator:
    """An async iterator over a remote one (an ``async def`` generator distributed): each item
    is fetched on a thread, so the event loop never blocks."""

    _END = object()

    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    def __aiter__(self) -> "AsyncRemoteIterator":
        return self

    async def __anext__(self) -> Any:
        value = await asyncio.to_thread(next, self._iterator, self._END)
        if value is self._END:
            raise StopAsyncIteration
        return value

    async def aclose(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
