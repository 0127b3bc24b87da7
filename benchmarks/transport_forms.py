"""The transport's other forms, for section 1: one round trip of the same bytes per call.

Beside the sync unary echo (``raw_echo_add``), each of these sends the
bytes of turbolift's ``add(1, 2)`` request to the baseline servers of
:mod:`benchmarks.baseline_server` and waits for them to come back,
rotating over the servers:

* :class:`SyncStreams`: grpcio sync bidirectional stream
  (``bench.Baseline/EchoStream``): one long-lived stream per server; a call
  puts one message on the stream's request queue and reads one reply (the
  form of turbolift's Session);
* :class:`ThreadStreams`: the same stream driven by the calling thread
  through grpcio's Cython layer (a *segregated* call, as grpcio's own sync
  unary uses): the thread posts the send and the receive and waits on the
  call's completion queue itself, with no hand-off to gRPC's sending and
  channel threads. Private API of grpcio (``grpc._cython``): a measure of
  what a stream costs without those hand-offs, not a form turbolift uses;
* :class:`AioForms`: the same stream, and the unary echo, from a
  ``grpc.aio`` channel on an event loop private to this thread. Their
  calls are timed inside the loop, each ``await`` on its own
  (:meth:`AioVariant.time_calls`), so that starting the loop is not
  counted; :func:`runner` lets :func:`benchmarks.measure.interleave`
  time them in the same rounds as the sync variants.
"""
from __future__ import annotations

import asyncio
import itertools
import queue
import time
from typing import Callable

from .baseline_server import MESSAGE_OPTIONS, SERVICE
from .measure import Budget, time_calls

STREAM_METHOD = f"/{SERVICE}/EchoStream"
UNARY_METHOD = f"/{SERVICE}/Echo"


class _SyncStream:
    def __init__(self, channel) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._replies = channel.stream_stream(STREAM_METHOD)(iter(self._outbox.get, None), timeout=3600)

    def call(self, request: bytes) -> bytes:
        self._outbox.put(request)
        return next(self._replies)

    def close(self) -> None:
        self._outbox.put(None)


class _ThreadStream:
    """One ``EchoStream`` whose every operation the calling thread starts and waits for."""

    def __init__(self, channel) -> None:
        from grpc._cython import cygrpc

        self._ops = cygrpc
        self._call = channel._channel.segregated_call(
            cygrpc.PropagationConstants.GRPC_PROPAGATE_DEFAULTS, STREAM_METHOD.encode(), None, None, None,
            None, (((cygrpc.SendInitialMetadataOperation(None, 0),), "start"),
                   ((cygrpc.ReceiveInitialMetadataOperation(0),), "metadata"),
                   ((cygrpc.ReceiveStatusOnClientOperation(0),), "status")), None, None)
        self._due = {"start", "metadata", "status"}

    def call(self, request: bytes) -> bytes:
        self._call.operate((self._ops.SendMessageOperation(request, 0),), "send")
        self._call.operate((self._ops.ReceiveMessageOperation(0),), "receive")
        self._due |= {"send", "receive"}
        reply = None
        while "send" in self._due or "receive" in self._due:
            event = self._call.next_event()
            self._due.discard(event.tag)
            if event.tag == "receive":
                reply = event.batch_operations[0].message()
            elif event.tag == "status":
                raise RuntimeError(f"the stream ended: {event.batch_operations[0].details()}")
        return reply

    def close(self) -> None:
        self._call.cancel(self._ops.StatusCode.cancelled, "benchmark over")


class _Streams:
    """One ``EchoStream`` of the form ``FORM`` per baseline channel; :meth:`caller` rotates over them."""

    FORM: type

    def __init__(self, channels: list) -> None:
        self._streams = [self.FORM(channel) for channel in channels]

    def caller(self, request: bytes) -> Callable[[], bytes]:
        turn = itertools.cycle(self._streams)
        return lambda: next(turn).call(request)

    def close(self) -> None:  # before the channels close
        for stream in self._streams:
            stream.close()


class ThreadStreams(_Streams):
    """Calling-thread streams (:class:`_ThreadStream`)."""

    FORM = _ThreadStream


class SyncStreams(_Streams):
    """Sync streams (:class:`_SyncStream`)."""

    FORM = _SyncStream


class AioVariant:
    """A variant whose calls are coroutines on ``loop``; callable once for a check."""

    def __init__(self, loop: asyncio.AbstractEventLoop, once: Callable) -> None:
        self._loop = loop
        self._once = once

    def __call__(self) -> bytes:
        return self._loop.run_until_complete(self._once())

    def time_calls(self, count: int, budget: Budget) -> list:
        return self._loop.run_until_complete(self._times(count, budget))

    async def _times(self, count: int, budget: Budget) -> list:
        samples: list = []
        clock = time.perf_counter
        once = self._once
        for _ in range(count):
            if samples and budget.expired():
                break
            start = clock()
            await once()
            samples.append(clock() - start)
        return samples


def runner(fn, count: int, budget: Budget) -> list:
    """For :func:`benchmarks.measure.interleave`: aio variants time themselves, the others as usual."""
    timed = getattr(fn, "time_calls", None)
    return timed(count, budget) if timed is not None else time_calls(fn, count, budget)


class AioForms:
    """``grpc.aio`` channels to ``addresses`` on a private event loop: unary and stream echo variants."""

    def __init__(self, addresses: list, timeout: float = 30.0) -> None:
        self.loop = asyncio.new_event_loop()
        self._channels: list = []
        self._streams: list = []
        try:
            self.loop.run_until_complete(self._open(addresses, timeout))
        except BaseException:
            self.close()
            raise

    async def _open(self, addresses: list, timeout: float) -> None:
        import grpc

        for address in addresses:
            channel = grpc.aio.insecure_channel(address, options=MESSAGE_OPTIONS)
            self._channels.append(channel)
            await asyncio.wait_for(channel.channel_ready(), timeout)
        self._unary = [channel.unary_unary(UNARY_METHOD) for channel in self._channels]
        self._streams = [channel.stream_stream(STREAM_METHOD)(timeout=3600) for channel in self._channels]

    def unary(self, request: bytes) -> AioVariant:
        turn = itertools.cycle(self._unary)

        async def once() -> bytes:
            return await next(turn)(request, timeout=60)
        return AioVariant(self.loop, once)

    def stream(self, request: bytes) -> AioVariant:
        turn = itertools.cycle(self._streams)

        async def once() -> bytes:
            call = next(turn)
            await call.write(request)
            return await call.read()
        return AioVariant(self.loop, once)

    async def _close(self) -> None:
        for call in self._streams:
            await call.done_writing()
        for channel in self._channels:
            await channel.close()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self.loop.run_until_complete(self._close())
        finally:
            self.loop.close()
