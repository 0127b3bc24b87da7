"""One channel to one worker, and what the caller knows about that worker.

The channel is created once and reused for every call (a new channel costs
milliseconds); the connection remembers which bundles the worker holds, how
many calls are in flight on it, and whether it is believed alive. It carries
the call metadata (the token) itself, so that nobody above it handles it.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .._wire import blobs
from .._wire.auth import metadata_for
from .._wire.protocol import MESSAGE_LIMIT, SERVICE_NAME
from .._wire.tls import TLS
from ..errors import ClusterError
from ..v1 import worker_pb2 as pb
from ..v1 import worker_pb2_grpc as pb_grpc
from .bundling import Bundle
from .calls import remaining

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    # Notice a worker whose host or link went away within ~10 s, not minutes.
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class Connection:
    """One channel to one worker, and what we know about that worker."""

    def __init__(self, address: str, tls: Optional[TLS] = None, token: Optional[str] = None) -> None:
        self.address = address
        if tls is not None:
            self.channel = grpc.secure_channel(address, tls.channel_credentials(),
                                               options=CHANNEL_OPTIONS + tls.channel_options())
        else:
            self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.WorkerStub(self.channel)
        self.metadata = metadata_for(token)
        self.bundles: set[str] = set()
        self.upload_lock = threading.Lock()
        self.inflight = 0                   # calls in flight on this worker
        self._count = threading.Lock()
        self.alive = True
        self.recovering = False

    def enter(self) -> None:
        with self._count:
            self.inflight += 1

    def leave(self) -> None:
        with self._count:
            self.inflight -= 1

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

    def send(self, method: str, request: Any, deadline: Optional[float]) -> Any:
        """One unary RPC (``Call`` or ``CallBatch``), waiting for its reply."""
        return getattr(self.stub, method)(request, timeout=remaining(deadline), metadata=self.metadata)

    def send_async(self, method: str, request: Any, deadline: Optional[float]) -> Any:
        """The same, returning gRPC's future of the reply."""
        return getattr(self.stub, method).future(request, timeout=remaining(deadline), metadata=self.metadata)

    def ensure_bundle(self, bundle: Bundle, deadline: Optional[float]) -> None:
        """Upload ``bundle`` unless this worker is known to hold it."""
        if bundle.id in self.bundles:
            return
        with self.upload_lock:  # concurrent first calls upload once
            if bundle.id in self.bundles:
                return
            self.stub.PutBundle(_bundle_chunks(bundle), metadata=self.metadata, timeout=remaining(deadline))
            self.bundles.add(bundle.id)

    def put_blob(self, data: bytes, deadline: Optional[float]) -> str:
        """Stream ``data`` to this worker; return the blob id a call can name."""
        def requests() -> Iterator[pb.BlobChunk]:
            for index, part in enumerate(blobs.chunks(data)):
                yield pb.BlobChunk(size=len(data) if index == 0 else 0, data=bytes(part))

        return self.stub.PutBlob(requests(), metadata=self.metadata, timeout=remaining(deadline)).blob_id

    def get_blob(self, ref: pb.BlobRef, deadline: Optional[float]) -> bytearray:
        """Stream a result blob from this worker into one buffer."""
        stream = self.stub.GetBlob(ref, metadata=self.metadata, timeout=remaining(deadline))
        return blobs.assemble(ref.size, (chunk.data for chunk in stream))

    def close(self) -> None:
        self.channel.close()


def _bundle_chunks(bundle: Bundle) -> Iterator[pb.BundleChunk]:
    header = pb.BundleHeader(bundle_id=bundle.id, size=len(bundle.data))
    for index, part in enumerate(blobs.chunks(bundle.data)):
        yield pb.BundleChunk(header=header if index == 0 else None, data=bytes(part))
