"""Coalescing concurrent ``submit`` calls of a cheap function.

A remote call of a function that runs in microseconds costs a gRPC round
trip of CPU on both sides; with many calls in flight that overhead, not the
function, sets the pace. When a function is cheap (its calls take under
``CHEAP_SECONDS`` on the worker, as the workers report) and it already has
``2 x workers`` messages in flight, further ``submit``s wait in a queue and
leave together, as one CallBatch message, as soon as one of those messages
returns (as Nagle's algorithm does for small TCP segments). A lone call, or
a call of an expensive or blocking function, is never held back.

Each submitted call keeps its own future, result and exception. A call
cancelled while it waits is dropped; once its batch has left it runs.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any, Callable, Optional

from . import _blobs, _serialize
from ._client import _decode_batch, _settle
from .v1 import worker_pb2 as pb

CHEAP_SECONDS = 0.001
MAX_ITEMS = 256


class Coalescer:
    """The submit path of one marked function on one dispatcher."""

    def __init__(self, dispatcher: Any, bundle: Any, ref: pb.FunctionRef, what: str,
                 direct: Callable[[tuple, dict, Callable], cf.Future],
                 options: Callable[[], tuple]) -> None:
        self._dispatcher = dispatcher
        self._bundle = bundle
        self._ref = self.ref = ref
        self._what = what
        self._direct = direct          # sends one call as a Call message
        self._options = options        # -> (deadline, retries)
        self._lock = threading.Lock()
        self._waiting: list[tuple[cf.Future, tuple, dict]] = []
        self._in_flight = 0            # messages (calls or batches) of this function
        self._seconds: Optional[float] = None   # running estimate of one call's work

    def _limit(self) -> int:
        return 2 * max(1, len(self._dispatcher.connections()))

    def observe(self, seconds: float, count: int = 1) -> None:
        """Learn how long calls take on the workers (an exponential average)."""
        if count:
            each = seconds / count
            self._seconds = each if self._seconds is None else 0.8 * self._seconds + 0.2 * each

    def submit(self, args: tuple, kwargs: dict) -> cf.Future:
        with self._lock:
            cheap = self._seconds is not None and self._seconds < CHEAP_SECONDS
            if cheap and self._in_flight >= self._limit():
                future: cf.Future = cf.Future()
                # The deadline counts from now, not from when the batch leaves.
                future.turbolift_deadline = self._options()[0]  # type: ignore[attr-defined]
                self._waiting.append((future, args, kwargs))
                return future
            self._in_flight += 1
        try:
            future = self._direct(args, kwargs, self.observe)
        except BaseException:
            self._message_done(None)
            raise
        future.add_done_callback(self._message_done)
        return future

    def _message_done(self, _: Any) -> None:
        """A message of this function returned: send what waited meanwhile."""
        with self._lock:
            self._in_flight -= 1
            if not self._waiting:
                return
            batch, self._waiting = self._waiting[:MAX_ITEMS], self._waiting[MAX_ITEMS:]
            self._in_flight += 1
        try:
            self._send(batch)
        except BaseException as exc:  # never lose a waiting call
            for future, _, _ in batch:
                _settle(future, exc=exc)
            self._message_done(None)

    def _send(self, batch: list[tuple[cf.Future, tuple, dict]]) -> None:
        batch = [entry for entry in batch if entry[0].set_running_or_notify_cancel()]
        if not batch:
            self._message_done(None)
            return
        try:
            items = _serialize.dumps([(args, kwargs) for _, args, kwargs in batch], for_worker=True,
                                     what="arguments")
        except TypeError:
            items = None  # one item cannot travel: send each alone so only it fails
        if items is None or (len(items) > _blobs.INLINE_LIMIT and len(batch) > 1):
            self._message_done(None)   # (large arguments: each alone, streamed as a blob)
            for future, args, kwargs in batch:
                self._forward(future, args, kwargs)
            return
        _, retries = self._options()
        deadlines = [future.turbolift_deadline for future, _, _ in batch]
        deadline = None if None in deadlines else min(deadlines)
        request = pb.BatchRequest(function=self._ref, items=items, count=len(batch), with_kwargs=True)
        message = self._dispatcher.submit("CallBatch", request, self._bundle, _decode_batch, deadline,
                                          retries, self._what)
        message.add_done_callback(lambda done: self._settle(done, batch))

    def _forward(self, future: cf.Future, args: tuple, kwargs: dict) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            inner = self._direct(args, kwargs, self.observe)
        except BaseException as exc:
            self._message_done(None)
            _settle(future, exc=exc)
            return
        inner.add_done_callback(self._message_done)
        inner.add_done_callback(lambda done: _copy(done, future))

    def _settle(self, done: cf.Future, batch: list[tuple[cf.Future, tuple, dict]]) -> None:
        try:
            outcomes, elapsed, _ = done.result()
        except BaseException as exc:
            for future, _, _ in batch:
                _settle(future, exc=exc)
        else:
            self.observe(elapsed, len(outcomes))
            for (future, _, _), (ok, value) in zip(batch, outcomes):
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(_serialize.unpack_exception(
                        value["exception"], value["type_name"], value["message"], value["traceback"]))
        self._message_done(None)


def _copy(source: cf.Future, target: cf.Future) -> None:
    try:
        value = source.result()
    except BaseException as exc:
        _settle(target, exc=exc)
    else:
        _settle(target, value=value)
