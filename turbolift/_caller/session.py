"""One Session stream to a worker, as the caller holds it.

:meth:`Stream.open` makes the stream and runs the handshake: the worker must
prove it holds the token before the caller sends its own proof or anything
else, and before anything it sends is unpickled. Then the stream carries one
exchange at a time (:mod:`.exchange`); a connection keeps idle streams for
reuse. Frames are sent through a queue that gRPC's own thread drains, and
received in the thread that runs the exchange.
"""
from __future__ import annotations

import queue
import time
from typing import Any, Iterator, Optional, Union

import grpc

from .._wire import bulk, handshake
from .._wire.auth import SESSION_METHOD
from .._wire.frames import client_frame
from .._wire.protocol import SESSION_VERSION
from ..errors import ClusterError
from ..v1 import worker_pb2 as pb

_CLOSE = None


def _decoded(raw: bytes) -> Any:
    return bulk.decoded(pb.ServerFrame, raw)


class _Payload:
    """A payload waiting in the outbox, cut into Chunk frames as it is sent."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data

    def chunks(self) -> Iterator[bytes]:
        return bulk.chunk_frames(pb.ClientFrame, self.data)


class StreamEnded(Exception):
    """The worker ended the stream between frames (it is shutting down)."""


class Stream:
    """A Session stream. ``send`` may be called from any thread; ``receive`` from one at a time."""

    def __init__(self, channel: grpc.Channel, address: str) -> None:
        self.address = address
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._call = channel.stream_stream(
            SESSION_METHOD, request_serializer=bulk.serialize,
            response_deserializer=_decoded)(self._frames())
        self.broken = False
        self.waiting = False                  # inside receive() (the monitor watches for silence)
        self.last_frame = time.monotonic()
        self.deadline: Optional[float] = None  # of the exchange in progress, for the monitor
        self.stopped_because: Optional[str] = None   # "deadline" or "silent" when the monitor cancelled it
        self.slots = 0
        self.worker_id = ""
        self.sent_levels = ""                 # the logging levels this worker last received
        self.version = 0                      # of the Session protocol the worker speaks (its Challenge)

    def _frames(self) -> Iterator[pb.ClientFrame]:
        """What gRPC's sending thread takes, one frame when the previous one left."""
        while True:
            frame = self._outbox.get()
            if frame is _CLOSE:
                return
            if isinstance(frame, _Payload):
                # Chunk frames are cut only as they are sent: a large payload is
                # never copied whole into the queue, and its pace is the link's.
                chunks, frame = frame.chunks(), None   # (no reference kept while the stream idles)
                for chunk in chunks:
                    yield chunk
                    self.last_frame = time.monotonic()  # sending proves the worker reads
                continue
            yield frame
            frame = None

    def send(self, frame: Union[pb.ClientFrame, bytes]) -> None:
        self._outbox.put(frame)

    def send_payload(self, data: Any) -> None:
        """Send ``data`` as Chunk frames (after the frames already queued)."""
        self._outbox.put(_Payload(data))

    def call_done(self) -> bool:
        """True when gRPC already knows the stream ended (an idle stream of a worker that restarted)."""
        return self.broken or self._call.done()

    def receive(self) -> pb.ServerFrame:
        """The next frame; StreamEnded when the worker closed the stream, grpc.RpcError on failure."""
        self.waiting = True
        try:
            frame = next(self._call)
        except StopIteration:
            self.broken = True
            raise StreamEnded(f"worker {self.address} closed the stream") from None
        except grpc.RpcError:
            self.broken = True
            raise
        finally:
            self.waiting = False
            self.last_frame = time.monotonic()
        return frame

    def handshake(self, token: Optional[str]) -> None:
        """Prove each side holds ``token``; ClusterError when the worker cannot (UNAVAILABLE: gRPC's)."""
        mine = handshake.nonce()
        self.send(client_frame("hello", nonce=mine, version=SESSION_VERSION))
        try:
            frame = self.receive()
        except StreamEnded:
            raise ClusterError(f"worker {self.address} closed the stream during the handshake") from None
        if frame.WhichOneof("frame") != "challenge":
            self.cancel()
            kind = frame.WhichOneof("frame")
            raise ClusterError(f"worker {self.address} answered the handshake with a {kind} frame; is it a "
                               "turbolift worker of this version?")
        challenge = frame.challenge
        expected = handshake.worker_proof(token, mine, challenge.nonce)
        if token and not handshake.verify(expected, challenge.proof):
            # Whoever answers at this address does not hold the token: send it nothing.
            self.cancel()
            raise ClusterError(
                f"the process at {self.address} could not prove it holds the workers' token, so nothing "
                "was sent to it: another program may have taken the worker's address (while it restarted), "
                "or the token files differ. Check the worker and the --token-file on both sides.")
        self.send(client_frame("proof", proof=handshake.caller_proof(token, mine, challenge.nonce)))
        self.slots = challenge.slots
        self.worker_id = challenge.worker_id
        self.version = challenge.version

    def cancel(self, reason: Optional[str] = None) -> None:
        """Cancel the stream (and whatever runs on it on the worker)."""
        if reason and self.stopped_because is None:
            self.stopped_because = reason
        self.broken = True
        self._call.cancel()
        self._outbox.put(_CLOSE)

    def close(self) -> None:
        """End the stream politely: the worker's session ends after its current exchange."""
        self.broken = True
        self._outbox.put(_CLOSE)

    def describe(self) -> Any:
        self.send(client_frame("describe"))
        frame = self.receive()
        if frame.WhichOneof("frame") != "described":
            raise ClusterError(f"worker {self.address} answered Describe with {frame.WhichOneof('frame')}")
        return frame.described
