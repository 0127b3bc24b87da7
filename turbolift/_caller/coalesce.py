"""Coalescing concurrent ``submit`` calls of a cheap function.

A remote call of a function that runs in microseconds costs a gRPC round
trip of CPU on both sides; with many calls in flight that overhead, not the
function, sets the pace. When a function is cheap (its calls take under
``CHEAP_SECONDS`` on the worker, as the workers report) and it already has
``MAX_MESSAGES`` messages in flight, further ``submit``s wait in a queue and
leave together, as one CallBatch message, as soon as one of those messages
returns (as Nagle's algorithm does for small TCP segments). A lone call, or
a call of an expensive or blocking function, is never held back.

Each submitted call keeps its own future, result and exception. A call
cancelled while it waits is dropped; once its batch has left it runs.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any, Optional

from .._wire import outcomes, serialize
from .._wire.protocol import FRAME_DATA
from ..v1 import worker_pb2 as pb
from .bundling import Target
from .calls import WorkEstimate, deadline_after
from .futures import copy_outcome, new_future, settle

CHEAP_SECONDS = 0.001
MAX_ITEMS = 256
# Messages of a cheap function in flight before further calls wait for a batch. Not more with more
# workers: for a cheap function the caller's CPU per message sets the pace, and a limit of 2 x workers
# sent almost every call alone with 8 workers (a quarter of 1 worker's rate).
MAX_MESSAGES = 2


class _Waiting:
    """A submitted call waiting for a batch, with the deadline it got when it was submitted."""

    __slots__ = ("future", "args", "kwargs", "deadline")

    def __init__(self, args: tuple, kwargs: dict, deadline: Optional[float]) -> None:
        self.future = new_future()
        self.args = args
        self.kwargs = kwargs
        self.deadline = deadline


class Coalescer:
    """The submit path of one marked function on one dispatcher.

    ``stub`` is the function's :class:`~.stub.RemoteStub`: it sends single
    calls (``submit_one``) and builds batch calls (``batch_of``).
    """

    def __init__(self, dispatcher: Any, target: Target, ref: pb.FunctionRef, stub: Any) -> None:
        self._dispatcher = dispatcher
        self._target = target
        self.ref = ref
        self._stub = stub
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._in_flight = 0            # messages (calls or batches) of this function
        self._cost = WorkEstimate()

    def submit(self, args: tuple, kwargs: dict) -> cf.Future:
        with self._lock:
            seconds = self._cost.seconds
            if seconds is not None and seconds < CHEAP_SECONDS and self._in_flight >= MAX_MESSAGES:
                # The deadline counts from now, not from when the batch leaves.
                waiting = _Waiting(args, kwargs, deadline_after(self._stub.timeout()))
                self._waiting.append(waiting)
                return waiting.future
            self._in_flight += 1
        try:
            future = self._stub.submit_one(self._target, self.ref, args, kwargs, self._cost.observe)
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
            for waiting in batch:
                settle(waiting.future, exc=exc)
            self._message_done(None)

    def _send(self, batch: list[_Waiting]) -> None:
        batch = [waiting for waiting in batch if waiting.future.set_running_or_notify_cancel()]
        if not batch:
            self._message_done(None)
            return
        modules: set = set()
        try:
            items = serialize.dumps_payload([(w.args, w.kwargs) for w in batch], for_worker=True,
                                            what="arguments", modules=modules, framed=True)
        except TypeError:
            items = None  # one item cannot travel: send each alone so only it fails
        if items is None or (len(items) > FRAME_DATA and len(batch) > 1):
            self._message_done(None)   # (large arguments: each alone, in chunks)
            for waiting in batch:
                self._forward(waiting)
            return
        deadlines = [waiting.deadline for waiting in batch]
        deadline = None if None in deadlines else min(deadlines)
        call = self._stub.batch_of(self._target, self.ref, items, len(batch), deadline, with_kwargs=True,
                                   modules=modules)
        message = self._dispatcher.submit(call)
        message.add_done_callback(lambda done: self._settle(done, batch))

    def _forward(self, waiting: _Waiting) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            inner = self._stub.submit_one(self._target, self.ref, waiting.args, waiting.kwargs,
                                          self._cost.observe)
        except BaseException as exc:
            self._message_done(None)
            settle(waiting.future, exc=exc)
            return
        inner.add_done_callback(self._message_done)
        inner.add_done_callback(lambda done: copy_outcome(done, waiting.future))

    def _settle(self, done: cf.Future, batch: list[_Waiting]) -> None:
        try:
            values, errors, elapsed, _ = done.result()
        except BaseException as exc:
            for waiting in batch:
                settle(waiting.future, exc=exc)
        else:
            self._cost.observe(elapsed, len(values))
            for index, (waiting, value) in enumerate(zip(batch, values)):
                if index in errors:
                    settle(waiting.future, exc=outcomes.raised(errors[index]))
                else:
                    settle(waiting.future, value)
        self._message_done(None)
