"""Exchanges on a Session stream, as the caller runs them.

:func:`invoke` sends one :class:`~.calls.Call` and reads what comes back
until its Reply: forwarded output, log records and warnings are re-emitted
on the way (:mod:`.events`), nested calls are handed to the cluster
(:mod:`.nested`), heartbeats only keep the monitor content. :func:`upload`
sends a bundle. A Failure frame raises :class:`Failed`; gRPC errors
propagate, for the dispatcher to read (lost worker, deadline, cancel).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from .._wire import bulk, serialize
from .._wire.chunked import Payload, Pieces, gather
from .._wire.frames import client_frame
from .._wire.protocol import FRAME_DATA, SINGLE_ARGUMENTS_VERSION
from ..errors import ClusterError
from ..v1 import worker_pb2 as pb
from .bundling import Bundle
from .calls import Call, remaining
from .events import Events, levels_json
from .nested import NestedHost
from .session import Stream


class Failed(Exception):
    """The worker answered an exchange with a Failure frame."""

    def __init__(self, failure: pb.Failure) -> None:
        super().__init__(failure.details)
        self.failure = failure


class Exchange:
    """The frames of one exchange on ``stream``, with its events and nested calls.

    ``label`` and ``worker`` name the call in forwarded output (``prefix``
    off: no names); ``deadline`` bounds its nested calls; ``streams`` are
    the iterators among the call's arguments, which the worker pulls from;
    ``ship`` uploads the bundles a value sent to the worker meanwhile needs.
    """

    def __init__(self, stream: Stream, label: str = "", worker: str = "", prefix: bool = True,
                 deadline: Optional[float] = None, streams: Optional[dict] = None,
                 ship: Optional[Callable[[set], list]] = None) -> None:
        self.stream = stream
        self._label, self._worker, self._prefix = label, worker, prefix
        self._deadline = deadline
        self._streams = streams
        self._ship = ship   # uploads what a value sent during the call needs (.late_bundles)
        self.events: Optional[Events] = None
        self.nested: Optional[NestedHost] = None

    def close(self) -> None:
        """The exchange is over: cancel the nested calls it started and no longer waits for."""
        if self.nested is not None:
            self.nested.close()

    def receive(self, *wanted: str) -> pb.ServerFrame:
        """The next frame of one of the ``wanted`` kinds, handling events and nested calls on the way."""
        stream = self.stream
        while True:
            frame = stream.receive()
            kind = frame.WhichOneof("frame")
            if kind in wanted:
                return frame
            if kind == "failure":
                raise Failed(frame.failure)
            if kind == "heartbeat":
                continue
            if kind in ("output", "log", "warning"):
                if self.events is None:
                    self.events = Events(self._label, self._worker, self._prefix)
                self.events.handle(frame, kind)
                continue
            if kind == "nested_call":
                if self.nested is None:
                    self.nested = NestedHost(self._deadline, self._streams, self._ship)
                self.nested.received(frame.nested_call, stream)
                continue
            stream.cancel()
            raise ClusterError(f"worker {stream.address} sent a {kind} frame where {' or '.join(wanted)} "
                               "was expected")

    def payload(self, inline: bytes, size: int) -> Any:
        """A payload that came inline, or the ``size`` bytes that follow as Chunk frames."""
        if not size:
            return inline
        return gather(size, (self.receive("chunk").chunk.data for _ in _until(size)))

    def send_payload(self, data: Payload) -> None:
        self.stream.send_payload(data)


def _until(size: int):
    """As many steps as Chunk frames a payload of ``size`` bytes takes (gather checks the sizes)."""
    return range((size + FRAME_DATA - 1) // FRAME_DATA)


def invoke(exchange: Exchange, call: Call) -> tuple[pb.Reply, Any]:
    """Send ``call``; return its Reply and the result's bytes (BUNDLE_MISSING and ITERATOR carry none)."""
    stream = exchange.stream
    frame = pb.ClientFrame()
    request = frame.invoke          # filled in place: no copy of the message
    request.function.CopyFrom(call.ref)
    request.call_id = call.call_id
    request.forward_events = True
    payload = call.payload
    if call.count:
        request.count = call.count
        request.with_kwargs = call.with_kwargs
        if call.single_arguments and stream.version < SINGLE_ARGUMENTS_VERSION:
            payload = _as_argument_tuples(payload)   # a worker of an older turbolift
        else:
            request.single_arguments = call.single_arguments
    if call.deadline is not None:
        request.timeout = max(remaining(call.deadline) or 0.0, 1e-6)  # 0 would mean "none"
    if call.extra:
        request.extra_bundles.extend(bundle.id for bundle in call.extra)
    levels = levels_json()
    if levels != stream.sent_levels:
        request.log_levels = stream.sent_levels = levels
    if len(payload) <= FRAME_DATA:
        stream.send(bulk.encoded(frame, "invoke", payload))
    else:
        request.arguments_size = len(payload)
        stream.send(frame)
        exchange.send_payload(payload)
    reply = exchange.receive("reply").reply
    if reply.outcome == pb.RETURNED:
        return reply, exchange.payload(reply.result, reply.result_size)
    return reply, None


def _as_argument_tuples(payload: Any) -> Any:
    """The items of a batch of one-argument calls (a tuple of the arguments) as a worker older than
    Invoke.single_arguments reads them: a list of 1-tuples. Rare, so simply unpickled and pickled
    again (from a joined copy: the call's own payload may be sent again, to a newer worker)."""
    data = b"".join(payload.parts) if isinstance(payload, Pieces) else payload
    arguments = serialize.loads(data)
    return serialize.dumps_payload([(argument,) for argument in arguments], for_worker=True,
                                   what="map items", framed=True)


def upload(exchange: Exchange, bundle: Bundle, preload: tuple = ()) -> None:
    """Send ``bundle`` to the worker on this stream; return once it is stored (and, for the
    FunctionRefs of ``preload``, once the worker imported their modules)."""
    exchange.stream.send(client_frame("bundle", bundle_id=bundle.id, size=len(bundle.data), preload=preload))
    exchange.send_payload(bundle.data)
    exchange.receive("bundle_stored")


def upload_aside(connection: Any, bundle: Bundle, preload: tuple = (), prefix: bool = True) -> None:
    """Upload ``bundle`` on a stream of its own of ``connection`` (a :class:`.connection.Connection`),
    not counted as a call in flight: ahead of a first call (the preload), or while a call runs."""
    stream = connection.checkout(counted=False)
    in_order = False
    try:
        upload(Exchange(stream, prefix=prefix), bundle, preload)
        connection.bundles.add(bundle.id)
        in_order = True
    finally:
        if in_order:
            connection.checkin(stream, counted=False)
        else:
            connection.discard(stream, counted=False)
