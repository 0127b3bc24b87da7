"""The Session stream on the worker: a handshake, then exchanges until the caller closes it.

One Session carries one exchange at a time, run in the thread that reads
its frames: an Invoke (a call or a batch; its output, log records,
warnings and heartbeats go out while it runs, then the Reply, then the
items of an iterator on credit), a bundle upload or a Describe. Running the
call in the reading thread costs no thread hop, which is what makes a
Session round trip cheaper than a unary call (see the README's benchmarks).
A caller runs exchanges concurrently by opening more Sessions.

Frames are sent through gRPC's non-blocking stream API, so that the
heartbeat thread and forwarded output can send while the call runs; one
lock per Session keeps them in order. Once the call asks for a nested call,
a pump thread takes over reading (see :mod:`.nested`).
"""
from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import grpc
from google.protobuf.message import DecodeError

from .._wire import bulk, handshake
from .._wire.chunked import ChunkError, Payload, Pieces, gather
from .._wire.frames import server_frame
from .._wire.protocol import FRAME_DATA, SESSION_VERSION
from ..errors import BundleError
from ..v1 import worker_pb2 as pb
from . import capture, execution, nested
from .cancel import Ticket
from .metrics import METRICS
from .state import Failure, WorkerState

HANDSHAKE_SECONDS = 10.0      # a stream that has not proven itself by then is cancelled
MAX_PENDING = 64              # streams still in their handshake; more are refused at once
MAX_SESSIONS = 1024           # proven streams at once
ITEM_BATCH_SECONDS = 0.002    # items of a fast iterator share a frame for at most this long
MAX_ITEMS_PER_FRAME = 256
_END = object()


class SessionHandler:
    """The behaviour gRPC calls for each Session (a non-blocking stream handler, on a pool of its own)."""

    experimental_non_blocking = True

    def __init__(self, state: WorkerState, pool: Any) -> None:
        self.experimental_thread_pool = pool
        self._state = state
        self._lock = threading.Lock()
        self._pending = 0
        self._open = 0

    def __call__(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext,
                 send: Callable[[Any], None]) -> None:
        with self._lock:
            refuse = self._pending >= MAX_PENDING or self._open >= MAX_SESSIONS
            if not refuse:
                self._pending += 1
        if refuse:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          "the worker has too many streams open; try again shortly")
        proven = False
        pending = True
        try:
            session = Session(self._state, request_iterator, context, send)
            proven = session.handshake()
            with self._lock:
                self._pending -= 1
                pending = False
                self._open += proven
            if proven:
                session.serve()
        finally:
            with self._lock:
                if pending:
                    self._pending -= 1
                elif proven:
                    self._open -= 1
        send(None)


class Session:
    """One Session stream."""

    def __init__(self, state: WorkerState, frames: Iterator[bytes], context: grpc.ServicerContext,
                 send: Callable[[Any], None]) -> None:
        self._state = state
        self.watchdog = state.watchdog
        self._frames = frames
        self._context = context
        self._raw_send = send
        self._send_lock = threading.Lock()
        self._last_sent = time.monotonic()
        self._levels: dict = {}
        self._quiet = False    # waiting for the caller (credit): no heartbeats, which could block
        self._pumped: Optional[queue.SimpleQueue] = None
        self.nested = nested.NestedCalls(self)

    # -- frames ----------------------------------------------------------------
    def send(self, frame: Union[pb.ServerFrame, bytes]) -> None:
        with self._send_lock:
            self._raw_send(frame)
            self._last_sent = time.monotonic()

    def _pulse(self) -> None:
        """A heartbeat for the caller waiting on a long call; skipped when frames flowed lately
        or another frame is being sent (sending may block on flow control)."""
        if self._quiet or time.monotonic() - self._last_sent < 1.0:
            return
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            self._raw_send(server_frame("heartbeat"))
            self._last_sent = time.monotonic()
        finally:
            self._send_lock.release()

    def parse(self, raw: bytes) -> pb.ClientFrame:
        try:
            return bulk.decoded(pb.ClientFrame, raw)
        except DecodeError as exc:
            self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ClientFrame: {exc}")
            raise  # pragma: no cover (abort raises)

    def next_frame(self) -> Optional[pb.ClientFrame]:
        """The next frame from the caller, or None when the stream ended."""
        if self._pumped is not None:
            return self._pumped.get()
        try:
            raw = next(self._frames)
        except StopIteration:
            return None
        except grpc.RpcError:  # cancelled by the caller
            return None
        return self.parse(raw)

    def activate_bundles(self, bundle_ids: Iterable[str]) -> None:
        """Make the bundles the caller uploaded during a call importable (for a value it sent)."""
        for bundle_id in bundle_ids:
            bundle = self._state.bundle(bundle_id)
            if bundle is None:
                raise BundleError(f"bundle {bundle_id}, sent by the caller for a value, is not here")
            bundle.activate()

    def start_pump(self, route: Callable[[pb.ClientFrame], bool]) -> None:
        """Read frames in a thread of their own from now on; ``route`` takes the frames it
        handles (nested replies) and the rest queue up for :meth:`next_frame`."""
        if self._pumped is not None:
            return
        pumped: queue.SimpleQueue = queue.SimpleQueue()

        def pump() -> None:
            try:
                for raw in self._frames:
                    frame = self.parse(raw)
                    if not route(frame):
                        pumped.put(frame)
            except Exception:
                pass
            finally:
                pumped.put(None)
                route(None)

        self._pumped = pumped
        threading.Thread(target=pump, name="turbolift-session-pump", daemon=True).start()

    def _expect(self, kind: str) -> Optional[Any]:
        frame = self.next_frame()
        if frame is None:
            return None
        if frame.WhichOneof("frame") != kind:
            self._context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"expected a {kind} frame, got {frame.WhichOneof('frame')}")
        return getattr(frame, kind)

    def _payload(self, size: int, what: str) -> Pieces:
        """``size`` bytes that follow as Chunk frames (heartbeats go out meanwhile: a large
        payload takes a while, and the caller is already waiting for the reply)."""
        def parts() -> Iterator[bytes]:
            received = 0
            while received < size:
                chunk = self._expect("chunk")
                if chunk is None:
                    raise ChunkError(f"the stream ended inside the {what}")
                received += len(chunk.data)
                self._pulse()
                yield chunk.data
        try:
            return gather(size, parts())
        except ChunkError as exc:
            self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {exc}")
            raise  # pragma: no cover

    def _send_payload(self, data: Payload, head: Callable[[bytes, int], pb.ServerFrame]) -> None:
        """``head(inline data, announced size)``, then Chunk frames when ``data`` is large."""
        if len(data) <= FRAME_DATA:
            self.send(head(data, 0))  # type: ignore[arg-type]  (a payload this small is bytes)
            return
        self.send(head(b"", len(data)))
        for chunk in bulk.chunk_frames(pb.ServerFrame, data):
            self.send(chunk)

    # -- the handshake -----------------------------------------------------------
    def handshake(self) -> bool:
        """True once the caller proved it holds the token (or none is needed)."""
        timer = threading.Timer(HANDSHAKE_SECONDS, self._context.cancel)
        timer.daemon = True
        timer.start()
        try:
            hello = self._expect("hello")
            if hello is None:
                return False
            if len(hello.nonce) != handshake.NONCE_BYTES:
                self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello needs a 32-byte nonce")
            token = self._state.token
            mine = handshake.nonce()
            self.send(server_frame("challenge",
                nonce=mine, proof=handshake.worker_proof(token, hello.nonce, mine), version=SESSION_VERSION,
                worker_id=self._state.worker_id, slots=self._state.watchdog.slots))
            proof = self._expect("proof")
            if proof is None:
                return False
            if token and not handshake.verify(handshake.caller_proof(token, hello.nonce, mine), proof.proof):
                self._context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "missing or wrong turbolift token: give the caller the worker's token "
                                    "(--token-file or TURBOLIFT_TOKEN_FILE)")
            return True
        finally:
            timer.cancel()

    # -- exchanges -----------------------------------------------------------------
    def serve(self) -> None:
        handlers = {"invoke": self._invoke, "bundle": self._upload, "describe": self._describe}
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            kind = frame.WhichOneof("frame")
            if kind in ("credit", "stop"):
                # Left over from an iterator that ended while the caller granted more: harmless.
                continue
            handler = handlers.get(kind or "")
            if handler is None:
                self._context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"a {kind} frame cannot begin an exchange")
            try:
                handler(getattr(frame, kind))
            except Failure as failure:
                self.send(failure.frame())
            if not self._context.is_active():
                return

    def _describe(self, _: pb.DescribeRequest) -> None:
        self.send(pb.ServerFrame(described=self._state.describe()))

    def _upload(self, header: pb.BundleHeader) -> None:
        received = {"bytes": 0}

        def parts() -> Iterator[bytes]:
            while received["bytes"] < header.size:
                chunk = self._expect("chunk")
                if chunk is None:
                    return
                received["bytes"] += len(chunk.data)
                yield chunk.data
        METRICS.received(header.size)
        try:
            stored = self._state.store.put(header.bundle_id, header.size, parts())
        except (BundleError, OSError) as exc:
            for _ in parts():  # keep the stream in step: read what is left of the upload
                pass
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, OSError) else \
                grpc.StatusCode.INVALID_ARGUMENT
            raise Failure(code, str(exc)) from None
        if header.preload:   # the caller is about to call these: import them, as their first calls would
            ticket = Ticket(self._context.is_active, None, self._pulse)
            self.watchdog.start_pulses(ticket)
            try:
                self._state.preload(header.bundle_id, header.preload, self._context.is_active)
            finally:
                self.watchdog.stop_pulses(ticket)
        self.send(server_frame("bundle_stored", bundle_id=header.bundle_id,
                               already_present=not stored))

    def _invoke(self, invoke: pb.Invoke) -> None:
        if invoke.log_levels:  # first: they hold for this stream even if this call goes no further
            self._levels = _levels(invoke.log_levels)
            capture.apply_levels(self._levels)
        payload: Any = invoke.arguments
        if invoke.arguments_size:
            payload = self._payload(invoke.arguments_size, "arguments")
        METRICS.received(len(payload))
        state = self._state
        for bundle_id in (*invoke.extra_bundles, invoke.function.bundle_id):
            bundle = state.bundle(bundle_id)
            if bundle is None:
                self.send(server_frame("reply", outcome=pb.BUNDLE_MISSING, missing_bundle=bundle_id))
                return
            bundle.activate()  # the function's own bundle last: its modules come first
        events = capture.Events(self.send, self._levels) if invoke.forward_events else None
        function = state.function(bundle, invoke.function, events)
        name = f"{invoke.function.module}.{invoke.function.qualname}"
        METRICS.started(name)
        deadline = time.monotonic() + invoke.timeout if invoke.timeout > 0 else None
        ticket = Ticket(self._context.is_active, deadline, self._pulse)
        watchdog = self.watchdog
        watchdog.start_pulses(ticket)
        try:
            self.nested.enter(ticket)
            try:
                if invoke.count:
                    outcome = execution.batch(watchdog, ticket, function, payload, invoke.count,
                                              invoke.with_kwargs, events, invoke.single_arguments)
                else:
                    outcome = execution.call(watchdog, ticket, function, payload, events)
            finally:
                self.nested.leave()
            del payload
            METRICS.finished(name, outcome.kind, outcome.elapsed)
            if outcome.kind == execution.RETURNED:
                METRICS.sent(len(outcome.value))
            if outcome.kind == execution.ITERATOR:
                self.send(server_frame("reply", outcome=pb.ITERATOR,
                                       elapsed_seconds=outcome.elapsed))
                self._iterate(outcome.value, events)
                return
        finally:
            watchdog.stop_pulses(ticket)
        self._reply(outcome, ticket)

    def _reply(self, outcome: execution.Outcome, ticket: Ticket) -> None:
        if outcome.kind == execution.RETURNED:
            result = outcome.value
            if len(result) <= FRAME_DATA:  # the common case, kept short
                self.send(bulk.encoded(server_frame("reply", outcome=pb.RETURNED,
                                                    elapsed_seconds=outcome.elapsed), "reply", result))
                return
            self._send_payload(result, lambda data, size: server_frame("reply",
                outcome=pb.RETURNED, result_size=size, elapsed_seconds=outcome.elapsed))
        elif outcome.kind == execution.RAISED:
            error = pb.RemoteException(**outcome.value)
            self.send(server_frame("reply", outcome=pb.RAISED, error=error,
                                   elapsed_seconds=outcome.elapsed))
        elif outcome.kind == execution.INVALID:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, outcome.value)
        elif ticket.expired():
            raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "the call did not finish before its deadline")
        else:  # cancelled: the stream is gone, or its caller stopped waiting
            raise Failure(grpc.StatusCode.CANCELLED, "the call was cancelled by its caller")

    def _iterate(self, iterator: Any, events: Optional[capture.Events]) -> None:
        """Send the items of ``iterator`` as the caller grants credit; close it however it ends."""
        watchdog = self._state.watchdog
        credit = 0
        try:
            while True:
                if credit == 0:
                    self._quiet = True
                    try:
                        frame = self.next_frame()
                    finally:
                        self._quiet = False
                    kind = frame.WhichOneof("frame") if frame is not None else None
                    if kind == "credit":
                        credit += max(1, frame.credit.items)
                        continue
                    if kind == "stop":
                        self.send(server_frame("end", stopped=True))
                    elif kind is not None:
                        self._context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            f"expected credit or stop while iterating, got {kind}")
                    return
                ticket = Ticket(self._context.is_active, None)
                items, ended = execution.step(watchdog, ticket, iterator, min(credit, MAX_ITEMS_PER_FRAME),
                                              events, ITEM_BATCH_SECONDS)
                self._send_items(items)
                credit -= len(items)
                if ended is not None:
                    if ended.kind == execution.RAISED:
                        self.send(server_frame("end", error=pb.RemoteException(**ended.value)))
                    elif ended.kind == execution.RETURNED:
                        self.send(server_frame("end"))
                    return
        finally:
            execution.close_iterator(watchdog, iterator, events)

    def _send_items(self, items: list) -> None:
        small: list = []
        for item in items:
            if len(item) <= FRAME_DATA:
                small.append(item)
                continue
            if small:
                self.send(server_frame("item", values=small))
                small = []
            self._send_payload(item, lambda data, size: server_frame(
                "item", values=[data] if data else [], size=size))
        if small:
            self.send(server_frame("item", values=small))


def _levels(text: str) -> dict:
    """The caller's logging levels, checked: {logger name: int level}."""
    try:
        found = json.loads(text)
    except ValueError:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, "log_levels must be a JSON object") from None
    if type(found) is not dict or not all(type(k) is str and type(v) is int for k, v in found.items()):
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, "log_levels must map logger names to integer levels")
    return found

