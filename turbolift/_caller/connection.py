"""One channel to one worker, its idle Session streams, and what the caller knows about the worker.

The channel is created once and reused for every call (a new channel costs
milliseconds). Exchanges check a stream out, and back in when they end in
order; a stream that broke, was cancelled or now belongs to an iterator is
not returned. The connection remembers which bundles the worker holds, how
many calls are in flight on it, and whether it is believed alive.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .._wire.protocol import CALLER_RECEIVE_LIMIT, MESSAGE_LIMIT, SERVICE_NAME
from .._wire.tls import TLS
from ..errors import ClusterError
from .monitor import Monitor
from .session import Stream

MAX_IDLE = 64   # idle streams kept per worker
# Streams this caller opens to one worker at once: well under the worker's limit of
# streams in their handshake (64), so that a burst of submits never meets it.
OPENING_AT_ONCE = 16
# A worker that has too many streams in their handshake (other callers' bursts) is
# asked again, backing off, for at most this long when the call has no deadline.
BUSY_RETRY_SECONDS = 60.0

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", CALLER_RECEIVE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    # Notice a link that went away; a worker that stopped answering is the
    # monitor's to notice (heartbeats), as gRPC applies no keepalive timeout alone.
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class WorkerEnded(ClusterError):
    """The worker exited before it served anything (the platform can start another)."""


class Connection:
    """One channel to one worker, and what we know about that worker."""

    def __init__(self, address: str, tls: Optional[TLS] = None, token: Optional[str] = None,
                 monitor: Optional[Monitor] = None) -> None:
        self.address = address
        if tls is not None:
            self.channel = grpc.secure_channel(address, tls.channel_credentials(),
                                               options=CHANNEL_OPTIONS + tls.channel_options())
        else:
            self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._token = token
        self._monitor = monitor or Monitor()
        self._owns_monitor = monitor is None   # (a dispatcher's monitor serves all its connections)
        self._idle: list[Stream] = []
        self._opening = threading.BoundedSemaphore(OPENING_AT_ONCE)
        self._lock = threading.Lock()
        self.bundles: set[str] = set()
        self.preloads: dict[str, threading.Event] = {}   # bundle id -> set once its preload ended
        self.inflight = 0                   # calls in flight on this worker
        self.alive = True
        self.recovering = False
        self.slots = 0                      # as the worker said in its handshake
        self.worker_id = address

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def checkout(self, deadline: Optional[float] = None, counted: bool = True) -> Stream:
        """An idle stream, or a new one (handshake included), counted in flight until
        :meth:`checkin` or :meth:`discard` (given the same ``counted``: a preload is not a call,
        and must not send the first calls to other workers). grpc.RpcError when the worker is
        unreachable."""
        stream = None
        with self._lock:
            if counted:
                self.inflight += 1
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.call_done():
                    stream = candidate
                    break
        try:
            return self._ready(stream, deadline)
        except BaseException:
            if counted:
                self.leave()
            raise

    def _ready(self, stream: Optional[Stream], deadline: Optional[float]) -> Stream:
        if stream is None:
            return self._open(deadline)
        stream.deadline = deadline
        self._monitor.watch(stream)
        return stream

    def _open(self, deadline: Optional[float]) -> Stream:
        """A new stream, its handshake done; a worker busy with other streams' handshakes is
        asked again (backing off) until ``deadline``."""
        give_up = deadline if deadline is not None else time.monotonic() + BUSY_RETRY_SECONDS
        pause = 0.02
        while True:
            if not self._opening.acquire(timeout=max(0.0, give_up - time.monotonic())):
                raise TimeoutError(f"could not open a stream to worker {self.address} before the deadline")
            try:
                stream = Stream(self.channel, self.address)
                stream.deadline = deadline
                self._monitor.watch(stream)
                try:
                    stream.handshake(self._token)
                except BaseException as exc:
                    self._monitor.forget(stream)
                    stream.cancel()
                    busy = isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    if not busy or time.monotonic() + pause >= give_up:
                        raise
                else:
                    self.slots, self.worker_id = stream.slots, stream.worker_id or self.address
                    return stream
            finally:
                self._opening.release()
            time.sleep(pause)
            pause = min(1.0, pause * 2)

    def checkin(self, stream: Stream, counted: bool = True) -> None:
        """Return a stream whose exchange ended in order; broken ones are dropped."""
        self._monitor.forget(stream)
        stream.deadline = None
        with self._lock:
            if counted:
                self.inflight -= 1
            if not stream.broken and len(self._idle) < MAX_IDLE:
                self._idle.append(stream)
                return
        if not stream.broken:
            stream.close()

    def discard(self, stream: Stream, reason: Optional[str] = None, counted: bool = True) -> None:
        """Cancel a stream that cannot be reused (what runs on it on the worker is stopped)."""
        self._monitor.forget(stream)
        if counted:
            self.leave()
        stream.cancel(reason)

    def wait_healthy(self, timeout: float, ended: Optional[Callable[[], Optional[str]]] = None) -> None:
        """Block until the worker's health service says SERVING.

        A TLS handshake failure is not worth waiting out: it fails at once;
        so does a worker that ``ended()`` says has exited (:class:`WorkerEnded`).
        """
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        asked = 0.0   # when ``ended`` was last asked (at most once a second: it may be an API call)
        while True:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                     timeout=max(0.1, min(2.0, deadline - time.monotonic())))
                break
            except grpc.RpcError as exc:
                details = exc.details() or ""
                if any(word in details.lower() for word in ("handshake", "ssl", "certificate", "tls")):
                    raise ClusterError(f"TLS with worker {self.address} failed: {details}. Check the CA, "
                                       "certificate and key on both sides") from None
                reason = None
                if ended is not None and time.monotonic() - asked >= 1.0:
                    asked = time.monotonic()
                    reason = ended()
                if reason is not None:
                    raise WorkerEnded(f"worker {self.address} exited ({reason}) before its first "
                                      "call") from None
                if time.monotonic() >= deadline:
                    raise ClusterError(f"worker {self.address} did not become healthy within "
                                       f"{timeout:.0f}s: {details}. Is it running and reachable, and do "
                                       "the TLS settings match (grpcs:// for a TLS worker)?") from None
                time.sleep(0.05)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ClusterError(f"worker {self.address} reports it is not serving")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for stream in idle:
            stream.close()
        self.channel.close()
        if self._owns_monitor:
            self._monitor.close()
