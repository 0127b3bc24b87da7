"""Calls that return futures: ``submit``, batches of ``map`` and coalesced submits.

Each call travels as an :class:`Attempt`: sent with gRPC's future API, its
reply handled off gRPC's channel thread (which delivers every reply of the
channel, and must never block on user callbacks that may wait on other
calls). Uploads, result fetches and retries after a lost worker run on a
background pool. The reply itself is read exactly as the synchronous path
reads it (:meth:`Dispatcher.next_step`).
"""
from __future__ import annotations

import concurrent.futures as cf
from typing import Any, Callable, Optional

import grpc

from .calls import FETCH, UPLOAD, Call
from .connection import Connection
from .failures import is_lost, translate
from .futures import settle


class Attempt:
    """One asynchronous call on its way, with what it needs to be retried."""

    __slots__ = ("call", "out", "lost", "uploads", "grpc_future")

    def __init__(self, call: Call, out: cf.Future) -> None:
        self.call = call
        self.out = out
        self.lost: list[Connection] = []
        self.uploads = 0
        self.grpc_future: Any = None


class AsyncCalls:
    """The asynchronous path of one dispatcher."""

    def __init__(self, dispatcher: Any) -> None:  # a Dispatcher, which imports this module
        self._dispatcher = dispatcher
        self._background = cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix="turbolift-client")
        self._delivery = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix="turbolift-deliver")

    def close(self) -> None:
        self._background.shutdown(wait=False, cancel_futures=True)
        self._delivery.shutdown(wait=False)

    def submit(self, call: Call) -> cf.Future:
        if call.large is not None:  # uploading blocks: let a background thread carry the whole call
            return self._background.submit(self._dispatcher.call, call)
        out: cf.Future = cf.Future()
        attempt = Attempt(call, out)
        out.add_done_callback(lambda done: _cancel_remote(attempt))
        self._send(attempt)
        return out

    def _send(self, attempt: Attempt, connection: Optional[Connection] = None) -> None:
        """Send ``attempt`` to ``connection``, or to the best worker when None."""
        if connection is None:
            try:
                connection = self._dispatcher.pick(attempt.lost)
            except BaseException as exc:
                settle(attempt.out, exc=exc)
                return
        if attempt.out.cancelled():
            return
        call = attempt.call
        connection.enter()
        try:
            future = connection.send_async(call.method, call.request, call.deadline)
        except BaseException as exc:  # e.g. the channel was closed meanwhile: never lose the call
            connection.leave()
            settle(attempt.out, exc=exc)
            return
        attempt.grpc_future = future
        future.add_done_callback(lambda done: self._on_reply(attempt, connection, done))

    def _later(self, pool: cf.ThreadPoolExecutor, attempt: Attempt, step: Callable, *args: Any) -> None:
        """Run ``step`` on ``pool``; whatever it raises settles the call instead of vanishing."""
        def guarded() -> None:
            try:
                step(attempt, *args)
            except BaseException as exc:
                settle(attempt.out, exc=exc)
        try:
            pool.submit(guarded)
        except RuntimeError:  # the dispatcher is closing: answer now
            guarded()

    def _on_reply(self, attempt: Attempt, connection: Connection, done: Any) -> None:
        connection.leave()
        self._later(self._delivery, attempt, self._handle_reply, connection, done)

    def _handle_reply(self, attempt: Attempt, connection: Connection, done: Any) -> None:
        if attempt.out.cancelled():
            return
        call = attempt.call
        try:
            reply = done.result()
        except grpc.FutureCancelledError:
            settle(attempt.out, exc=cf.CancelledError())
            return
        except grpc.RpcError as exc:
            if not is_lost(exc):
                settle(attempt.out, exc=translate(exc, connection.address, call.what))
                return
            self._lose(attempt, connection, exc.details())
            return
        step = self._dispatcher.next_step(call, connection, reply, attempt.uploads)
        if step == UPLOAD:
            self._later(self._background, attempt, self._upload_then_send, connection)
        elif step == FETCH:  # fetching blocks: not on a delivery thread
            self._later(self._background, attempt, self._finish, connection, reply, step)
        else:
            self._finish(attempt, connection, reply, step)

    def _lose(self, attempt: Attempt, connection: Connection, details: str) -> None:
        """The worker went away mid-call: retry elsewhere (on a background thread) or fail."""
        attempt.lost.append(connection)
        self._dispatcher.lose(connection)
        self._later(self._background, attempt, self._retry_or_fail, connection, details)

    def _finish(self, attempt: Attempt, connection: Connection, reply: Any, step: str) -> None:
        try:
            value = self._dispatcher.finish(attempt.call, connection, reply, step)
        except grpc.RpcError as exc:  # fetching the result blob failed
            if is_lost(exc):
                self._lose(attempt, connection, exc.details())
            else:
                settle(attempt.out, exc=translate(exc, connection.address, attempt.call.what))
        except BaseException as exc:
            settle(attempt.out, exc=exc)
        else:
            settle(attempt.out, value=value)

    def _retry_or_fail(self, attempt: Attempt, connection: Connection, details: str) -> None:
        dispatcher = self._dispatcher
        if dispatcher.can_retry(attempt.lost, attempt.call.retries):
            self._send(attempt)
        else:
            settle(attempt.out, exc=dispatcher.lost_error(connection, attempt.call.what, len(attempt.lost),
                                                          details))

    def _upload_then_send(self, attempt: Attempt, connection: Connection) -> None:
        try:
            connection.ensure_bundle(attempt.call.bundle, attempt.call.deadline)
        except grpc.RpcError as exc:
            if is_lost(exc):
                self._lose(attempt, connection, exc.details())
            else:
                settle(attempt.out, exc=translate(exc, connection.address, "a bundle upload"))
            return
        attempt.uploads += 1
        self._send(attempt, connection)  # the worker that now holds the bundle


def _cancel_remote(attempt: Attempt) -> None:
    if attempt.out.cancelled() and attempt.grpc_future is not None:
        attempt.grpc_future.cancel()
