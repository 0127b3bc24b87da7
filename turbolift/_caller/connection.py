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
from typing import Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .._wire.protocol import CALLER_RECEIVE_LIMIT, MESSAGE_LIMIT, SERVICE_NAME
from .._wire.tls import TLS
from ..errors import ClusterError
from .monitor import Monitor
from .session import Stream

MAX_IDLE = 64   # idle streams kept per worker

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
        self._idle: list[Stream] = []
        self._lock = threading.Lock()
        self.bundles: set[str] = set()
        self.upload_lock = threading.Lock()
        self.inflight = 0                   # calls in flight on this worker
        self.alive = True
        self.recovering = False
        self.slots = 0                      # as the worker said in its handshake
        self.worker_id = address

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def checkout(self, deadline: Optional[float] = None) -> Stream:
        """An idle stream, or a new one (handshake included), counted in flight until
        :meth:`checkin` or :meth:`discard`. grpc.RpcError when the worker is unreachable."""
        stream = None
        with self._lock:
            self.inflight += 1
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.call_done():
                    stream = candidate
                    break
        try:
            return self._ready(stream, deadline)
        except BaseException:
            self.leave()
            raise

    def _ready(self, stream: Optional[Stream], deadline: Optional[float]) -> Stream:
        if stream is None:
            stream = Stream(self.channel, self.address)
            stream.deadline = deadline
            self._monitor.watch(stream)
            try:
                stream.handshake(self._token)
            except BaseException:
                self._monitor.forget(stream)
                stream.cancel()
                raise
            self.slots, self.worker_id = stream.slots, stream.worker_id or self.address
        else:
            stream.deadline = deadline
            self._monitor.watch(stream)
        return stream

    def checkin(self, stream: Stream) -> None:
        """Return a stream whose exchange ended in order; broken ones are dropped."""
        self._monitor.forget(stream)
        stream.deadline = None
        with self._lock:
            self.inflight -= 1
            if not stream.broken and len(self._idle) < MAX_IDLE:
                self._idle.append(stream)
                return
        if not stream.broken:
            stream.close()

    def discard(self, stream: Stream, reason: Optional[str] = None) -> None:
        """Cancel a stream that cannot be reused (what runs on it on the worker is stopped)."""
        self._monitor.forget(stream)
        self.leave()
        stream.cancel(reason)

    def wait_healthy(self, timeout: float) -> None:
        """Block until the worker's health service says SERVING.

        A TLS handshake failure is not worth waiting out: it fails at once.
        """
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
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
