"""The caller's side of a remote call.

A :class:`Dispatcher` owns one cluster: one channel per worker (reused for
every call), the knowledge of which worker holds which bundle, and the
choice of worker (fewest calls in flight). A :class:`RemoteStub` is what a
marked function calls when distribution is on.

Calls are optimistic about bundles: a call is sent straight away, and only a
worker that answers BUNDLE_MISSING gets the bundle uploaded, once, before the
call is sent again. A call whose worker is lost (UNAVAILABLE) is sent to
another worker, since marked functions are assumed pure.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import os
import threading
import time
from typing import Any, Callable, Iterator, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import _blobs, _bundle, _runtime, _serialize
from ._auth import metadata_for
from ._worker import MESSAGE_LIMIT, SERVICE_NAME
from .errors import BundleError, ClusterError, EnvironmentMismatch, TurboliftError, WorkerLost
from .platforms import Cluster
from .v1 import worker_pb2 as pb
from .v1 import worker_pb2_grpc as pb_grpc

DEFAULT_RETRIES = 2
READY_TIMEOUT = 60.0
UPLOAD_CHUNK = 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    # Notice a worker whose host or link went away within ~10 s, not minutes.
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_call_ids = itertools.count()
_PID = os.getpid()


def _remaining(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.0)


class _Connection:
    """One channel to one worker, and what we know about that worker."""

    def __init__(self, address: str, tls: Any = None) -> None:
        self.address = address
        if tls is not None:
            self.channel = grpc.secure_channel(address, tls.channel_credentials(),
                                               options=CHANNEL_OPTIONS + tls.channel_options())
        else:
            self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.WorkerStub(self.channel)
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

    def wait_healthy(self, timeout: float, metadata: tuple) -> None:
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

    def ensure_bundle(self, bundle: _bundle.Bundle, metadata: tuple, deadline: Optional[float]) -> None:
        """Upload ``bundle`` unless this worker is known to hold it."""
        if bundle.id in self.bundles:
            return
        with self.upload_lock:  # concurrent first calls upload once
            if bundle.id in self.bundles:
                return
            self.stub.PutBundle(_chunks(bundle), metadata=metadata, timeout=_remaining(deadline))
            self.bundles.add(bundle.id)

    def put_blob(self, data: bytes, metadata: tuple, deadline: Optional[float]) -> str:
        """Stream ``data`` to this worker; return the blob id a call can name."""
        def requests() -> Iterator[pb.BlobChunk]:
            for index, part in enumerate(_blobs.chunks(data)):
                yield pb.BlobChunk(size=len(data) if index == 0 else 0, data=bytes(part))

        return self.stub.PutBlob(requests(), metadata=metadata, timeout=_remaining(deadline)).blob_id

    def get_blob(self, ref: pb.BlobRef, metadata: tuple, deadline: Optional[float]) -> bytearray:
        """Stream a result blob from this worker into one buffer."""
        stream = self.stub.GetBlob(ref, metadata=metadata, timeout=_remaining(deadline))
        return _blobs.assemble(ref.size, (chunk.data for chunk in stream))

    def close(self) -> None:
        self.channel.close()


def _chunks(bundle: _bundle.Bundle) -> Iterator[pb.BundleChunk]:
    data = memoryview(bundle.data)
    header = pb.BundleHeader(bundle_id=bundle.id, size=len(data))
    yield pb.BundleChunk(header=header, data=bytes(data[:UPLOAD_CHUNK]))
    for start in range(UPLOAD_CHUNK, len(data), UPLOAD_CHUNK):
        yield pb.BundleChunk(data=bytes(data[start:start + UPLOAD_CHUNK]))


def _translate(exc: grpc.RpcError, address: str, what: str) -> BaseException:
    """Turn a gRPC status into the exception a user can act on."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f"{what} did not finish before its deadline")
    if code == grpc.StatusCode.UNAVAILABLE:
        return WorkerLost(f"worker {address} was lost during {what} and no retry was left: {details}",
                          worker=address)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ClusterError(f"worker {address} refused {what}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        for key, value in exc.trailing_metadata() or ():
            if key == "turbolift-differences":
                return EnvironmentMismatch(details, [tuple(d) for d in json.loads(value)])
        return BundleError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return BundleError(details)
    if code == grpc.StatusCode.CANCELLED:
        return cf.CancelledError(f"{what} was cancelled")
    return TurboliftError(f"worker {address} failed {what} ({code.name}): {details}")


def _decode_call(reply: pb.CallReply, fetched: Optional[bytearray] = None) -> Any:
    """The return value, or raise the remote exception; ``fetched`` is a result blob."""
    if reply.outcome == pb.RETURNED:
        return _serialize.loads(reply.result if fetched is None else fetched)
    if reply.outcome == pb.RAISED:
        error = reply.error
        raise _serialize.unpack_exception(error.exception, error.type_name, error.message, error.traceback)
    raise TurboliftError(f"worker sent an unexpected outcome {reply.outcome}")


def _decode_batch(reply: pb.BatchReply, fetched: Optional[bytearray] = None) -> tuple[list, float]:
    if reply.outcome != pb.RETURNED:
        raise TurboliftError(f"worker sent an unexpected batch outcome {reply.outcome}")
    return _serialize.loads(reply.results), reply.elapsed_seconds


class _Attempt:
    """One call travelling asynchronously, with what it needs to be retried."""

    __slots__ = ("out", "method", "request", "bundle", "decode", "deadline", "retries", "lost",
                 "uploaded", "what", "grpc_future")

    def __init__(self, out: cf.Future, method: str, request: Any, bundle: _bundle.Bundle,
                 decode: Callable, deadline: Optional[float], retries: int, what: str) -> None:
        self.out = out
        self.method = method
        self.request = request
        self.bundle = bundle
        self.decode = decode
        self.deadline = deadline
        self.retries = retries
        self.lost: list[_Connection] = []
        self.uploaded = False
        self.what = what
        self.grpc_future: Any = None


class Dispatcher:
    """Sends calls for one cluster; started lazily, closed at exit."""

    def __init__(self, cluster: Cluster, token_file: Optional[str] = None) -> None:
        self.cluster = cluster
        token = cluster.token
        if token is None and token_file:
            from .platforms import _read_token

            token = _read_token(None, token_file)
        self._metadata = self.metadata = metadata_for(token)
        self._connections: list[_Connection] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._turn = itertools.count()
        self._background = cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix="turbolift-client")
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self.cluster.start()

    def connections(self) -> list[_Connection]:
        """The connections, once every worker is healthy (blocks the first time)."""
        if self._connections:
            return self._connections
        with self._lock:
            if self._closed:
                raise ClusterError("this cluster has been shut down")
            if not self._connections:
                addresses = self.cluster.wait_ready(self.cluster.ready_timeout)
                if not addresses:
                    raise ClusterError(f"{self.cluster!r} has no workers")
                fresh = [_Connection(address, self.cluster.tls) for address in addresses]
                for connection in fresh:
                    connection.wait_healthy(self.cluster.ready_timeout, self._metadata)
                self._connections = fresh
                self.cluster.subscribe(self._addresses_changed)
        return self._connections

    def _addresses_changed(self, addresses: list[str]) -> None:
        """Follow a platform whose workers come and go (keep known ones' state)."""
        with self._lock:
            if self._closed:
                return
            known = {c.address: c for c in self._connections}
            updated = [known.get(address) or _Connection(address, self.cluster.tls) for address in addresses]
            gone = [c for c in self._connections if c.address not in set(addresses)]
            self._connections = updated
        for connection in gone:
            connection.alive = False
            # A departing worker (a pod scaled away) may still finish what it
            # runs: close its channel once its calls are done, not before.
            threading.Thread(target=self._close_when_idle, args=(connection,), daemon=True,
                             name=f"turbolift-drain-{connection.address}").start()

    @staticmethod
    def _close_when_idle(connection: _Connection, limit: float = 600.0) -> None:
        deadline = time.monotonic() + limit
        while connection.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._background.shutdown(wait=False, cancel_futures=True)
        self.cluster.stop()

    # -- choosing and losing workers -------------------------------------------
    def _pick(self, avoid: list[_Connection]) -> _Connection:
        """The live worker with the fewest calls in flight, not in ``avoid``.

        While lost workers are being replaced and no other is live, wait
        (bounded) for a replacement rather than failing at once.
        """
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            connections = self.connections()
            candidates = [c for c in connections if c.alive and c not in avoid]
            if candidates or time.monotonic() > deadline:
                break
            if not any(c.recovering for c in connections):
                break
            with self._changed:
                self._changed.wait(0.25)
        if not candidates:  # every live worker was tried: one may have come back
            candidates = [c for c in connections if c.alive] or [c for c in connections if c not in avoid]
        if not candidates:
            raise WorkerLost(f"every worker of {self.cluster!r} was lost",
                             worker=avoid[-1].address if avoid else "")
        if len(candidates) == 1:
            return candidates[0]
        start = next(self._turn) % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda c: c.inflight)

    def least_busy(self) -> Optional[_Connection]:
        """The live connection with the fewest calls in flight, or None; never waits.

        Ties go round-robin, so that even one caller calling in sequence
        spreads its calls over every worker.
        """
        connections = self._connections
        count = len(connections)
        if count == 1:
            only = connections[0]
            return only if only.alive else None
        start = next(self._turn)
        best = None
        for offset in range(count):
            connection = connections[(start + offset) % count]
            if connection.alive and (best is None or connection.inflight < best.inflight):
                best = connection
        return best

    def _can_retry(self, lost: list[_Connection], retries: int) -> bool:
        if len(lost) > retries:
            return False
        return any(c not in lost or c.recovering for c in self.connections())

    def _lost_error(self, connection: _Connection, what: str, attempts: int, details: str) -> WorkerLost:
        reason = self.cluster.exit_reason(connection.address, timeout=1.0)
        died = f"died ({reason})" if reason else f"was lost ({details})"
        hint = ("; when this happens on every worker, the function itself ends its process "
                "(os._exit, a crash in native code) or runs out of memory") if reason else ""
        return WorkerLost(f"worker {connection.address} {died} during {what}, after {attempts} "
                          f"attempt(s){hint}", worker=connection.address)

    def _lost(self, connection: _Connection) -> None:
        with self._lock:
            if not connection.alive or connection.recovering:
                return
            connection.alive = False
            connection.recovering = True
        # A thread of its own: recovery may take seconds and must never wait
        # behind the retries that are waiting for it.
        threading.Thread(target=self._recover, args=(connection,), daemon=True,
                         name=f"turbolift-recover-{connection.address}").start()

    def _recover(self, connection: _Connection) -> None:
        """Replace a lost worker if the platform can; else probe it again later."""
        try:
            address = self.cluster.replace(connection.address, READY_TIMEOUT)
        except Exception:
            address = None
        fresh = None
        if address is not None:
            fresh = _Connection(address, self.cluster.tls)
            try:
                fresh.wait_healthy(READY_TIMEOUT, self._metadata)
            except ClusterError:
                fresh.close()
                fresh = None
        else:
            time.sleep(1.0)  # a static worker: give its supervisor time to restart it
        with self._changed:
            if fresh is not None:
                self._connections = [fresh if c is connection else c for c in self._connections]
            else:
                connection.alive = True  # let the next call find out
            connection.recovering = False
            self._changed.notify_all()
        if fresh is not None:
            connection.close()

    # -- synchronous calls -------------------------------------------------------
    def call(self, method: str, request: Any, bundle: _bundle.Bundle, decode: Callable,
             deadline: Optional[float], retries: int, what: str, large: Optional[bytes] = None,
             lost: Optional[_Connection] = None, details: str = "") -> Any:
        """Run one call and return ``decode(reply, fetched_result)``.

        ``large`` is an argument payload too large to travel inline: it is
        uploaded as a blob to whichever worker the call goes to. ``lost`` is
        a worker an earlier attempt of this call already lost.
        """
        tried: list[_Connection] = []
        if lost is not None:
            tried.append(lost)
            self._lost(lost)
            if not self._can_retry(tried, retries):
                raise self._lost_error(lost, what, 1, details)
        while True:
            connection = self._pick(tried)
            try:
                if large is not None:
                    request.arguments_blob = connection.put_blob(large, self._metadata, deadline)
                reply = self._send(connection, method, request, bundle, deadline)
                fetched = None
                if method == "Call" and reply.HasField("result_blob"):
                    fetched = connection.get_blob(reply.result_blob, self._metadata, deadline)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise _translate(exc, connection.address, what) from None
                tried.append(connection)
                self._lost(connection)
                if self._can_retry(tried, retries):
                    continue
                raise self._lost_error(connection, what, len(tried), exc.details()) from None
            return decode(reply, fetched)

    def _send(self, connection: _Connection, method: str, request: Any, bundle: _bundle.Bundle,
              deadline: Optional[float]) -> Any:
        rpc = getattr(connection.stub, method)
        connection.enter()
        try:
            reply = rpc(request, timeout=_remaining(deadline), metadata=self._metadata)
            uploads = 0
            while reply.outcome == pb.BUNDLE_MISSING:
                # Upload, then call again. Twice at most: a worker restarted
                # at the same address may have lost the first upload.
                if uploads == 2:
                    raise BundleError(f"worker {connection.address} lost bundle {bundle.id} right after "
                                      "it was uploaded; is its cache directory writable?")
                connection.bundles.discard(bundle.id)
                connection.ensure_bundle(bundle, self._metadata, deadline)
                uploads += 1
                reply = rpc(request, timeout=_remaining(deadline), metadata=self._metadata)
            connection.bundles.add(bundle.id)
            return reply
        finally:
            connection.leave()

    # -- asynchronous calls ------------------------------------------------------
    def submit(self, method: str, request: Any, bundle: _bundle.Bundle, decode: Callable,
               deadline: Optional[float], retries: int, what: str,
               large: Optional[bytes] = None) -> cf.Future:
        if large is not None:  # uploading blocks: let a background thread carry it
            return self._background.submit(self.call, method, request, bundle, decode, deadline, retries,
                                           what, large)
        out: cf.Future = cf.Future()
        attempt = _Attempt(out, method, request, bundle, decode, deadline, retries, what)
        out.add_done_callback(_cancel_remote(attempt))
        self._try(attempt)
        return out

    def _try(self, attempt: _Attempt, connection: Optional[_Connection] = None) -> None:
        """Send ``attempt`` to ``connection``, or to the best worker when None."""
        if connection is None:
            try:
                connection = self._pick(attempt.lost)
            except BaseException as exc:
                _settle(attempt.out, exc=exc)
                return
        if attempt.out.cancelled():
            return
        connection.enter()
        rpc = getattr(connection.stub, attempt.method)
        future = rpc.future(attempt.request, timeout=_remaining(attempt.deadline),
                            metadata=self._metadata)
        attempt.grpc_future = future
        future.add_done_callback(lambda done: self._on_reply(attempt, connection, done))

    def _on_reply(self, attempt: _Attempt, connection: _Connection, done: Any) -> None:
        connection.leave()
        if attempt.out.cancelled():
            return
        try:
            reply = done.result()
        except grpc.FutureCancelledError:
            _settle(attempt.out, exc=cf.CancelledError())
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                _settle(attempt.out, exc=_translate(exc, connection.address, attempt.what))
                return
            attempt.lost.append(connection)
            self._lost(connection)
            self._background.submit(self._retry_or_fail, attempt, connection, exc.details())
            return
        if reply.outcome == pb.BUNDLE_MISSING:
            if attempt.uploaded:
                _settle(attempt.out, exc=BundleError(
                    f"worker {connection.address} lost bundle {attempt.bundle.id} right after "
                    "it was uploaded; is its cache directory writable?"))
                return
            self._background.submit(self._upload_then_try, attempt, connection)
            return
        connection.bundles.add(attempt.bundle.id)
        if attempt.method == "Call" and reply.HasField("result_blob"):
            self._background.submit(self._fetch_then_settle, attempt, connection, reply)
            return
        try:
            value = attempt.decode(reply)
        except BaseException as exc:
            _settle(attempt.out, exc=exc)
        else:
            _settle(attempt.out, value=value)

    def _fetch_then_settle(self, attempt: _Attempt, connection: _Connection, reply: Any) -> None:
        try:
            fetched = connection.get_blob(reply.result_blob, self._metadata, attempt.deadline)
            value = attempt.decode(reply, fetched)
        except grpc.RpcError as exc:
            _settle(attempt.out, exc=_translate(exc, connection.address, attempt.what))
        except BaseException as exc:
            _settle(attempt.out, exc=exc)
        else:
            _settle(attempt.out, value=value)

    def _retry_or_fail(self, attempt: _Attempt, connection: _Connection, details: str) -> None:
        if self._can_retry(attempt.lost, attempt.retries):
            self._try(attempt)
        else:
            _settle(attempt.out, exc=self._lost_error(connection, attempt.what, len(attempt.lost), details))

    def _upload_then_try(self, attempt: _Attempt, connection: _Connection) -> None:
        connection.bundles.discard(attempt.bundle.id)
        try:
            connection.ensure_bundle(attempt.bundle, self._metadata, attempt.deadline)
        except grpc.RpcError as exc:
            _settle(attempt.out, exc=_translate(exc, connection.address, "a bundle upload"))
            return
        attempt.uploaded = True
        self._try(attempt, connection)  # the worker that now holds the bundle


def _settle(out: cf.Future, value: Any = None, exc: Optional[BaseException] = None) -> None:
    """Complete ``out`` unless the caller cancelled it meanwhile."""
    try:
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(value)
    except cf.InvalidStateError:
        pass


def _cancel_remote(attempt: _Attempt) -> Callable[[cf.Future], None]:
    def on_done(out: cf.Future) -> None:
        if out.cancelled() and attempt.grpc_future is not None:
            attempt.grpc_future.cancel()
    return on_done


class RemoteStub:
    """The client stub behind a marked function when distribution is on."""

    def __init__(self, function: Any) -> None:
        self._function = function
        self._lock = threading.Lock()
        self._resolved: Optional[tuple[Dispatcher, _bundle.Target, pb.FunctionRef]] = None
        self._parent: Optional[RemoteStub] = None
        self._coalescer: Any = None
        self._what = f"a call of {function.__module__}.{function.__qualname__}"

    def with_function(self, function: Any) -> "RemoteStub":
        """A stub for a copy of the function with other options (same target)."""
        stub = RemoteStub(function)
        stub._parent = self
        return stub

    def _resolve(self) -> tuple[Dispatcher, _bundle.Target, pb.FunctionRef]:
        resolved = self._resolved
        if resolved is None and self._parent is not None:
            resolved = self._resolved = self._parent._resolve()
        if resolved is None:
            with self._lock:
                if self._resolved is None:
                    dispatcher = _runtime.dispatcher(self._function.cluster)
                    dispatcher.start()
                    # Deadlines cover calls, not the cluster's first start-up.
                    dispatcher.connections()
                    target = _bundle.target_for(self._function)
                    ref = pb.FunctionRef(bundle_id=target.bundle.id, module=target.module,
                                         qualname=target.qualname)
                    self._resolved = (dispatcher, target, ref)
                resolved = self._resolved
        return resolved

    def _options(self) -> tuple[Optional[float], int]:
        timeout = self._function.timeout
        if timeout is None:
            timeout = _runtime.setting("timeout")
        retries = self._function.retries
        if retries is None:
            retries = _runtime.setting("retries", DEFAULT_RETRIES)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        return deadline, retries

    def _call_directly(self, dispatcher: Dispatcher, connection: _Connection, target: _bundle.Target,
                       ref: pb.FunctionRef, arguments: bytes) -> tuple[bool, Any]:
        """The common case, kept short: one attempt on a live worker that holds the bundle.

        Returns ``(True, value)``, raises the call's exception, or returns
        ``(False, None)`` when nothing ran (the worker lacked the bundle) so
        that the general path uploads and calls again. A lost worker hands
        the call to the general path, which counts this attempt and retries.
        """
        timeout = self._function.timeout
        if timeout is None:
            timeout = _runtime.setting("timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        connection.enter()
        try:
            reply = connection.stub.Call(pb.CallRequest(function=ref, arguments=arguments), timeout=timeout,
                                         metadata=dispatcher.metadata)
            if reply.outcome == pb.BUNDLE_MISSING:
                return False, None
            fetched = None
            if reply.HasField("result_blob"):
                fetched = connection.get_blob(reply.result_blob, dispatcher.metadata, deadline)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise _translate(exc, connection.address, self._what) from None
            _, retries = self._options()
            request, large = self._request(ref, arguments)
            return True, dispatcher.call("Call", request, target.bundle, _decode_call, deadline, retries,
                                         self._what, large, lost=connection, details=exc.details())
        finally:
            connection.leave()
        return True, _decode_call(reply, fetched)

    def _request(self, ref: pb.FunctionRef, arguments: bytes) -> tuple[pb.CallRequest, Any]:
        """The request, and the payload when it is too large to travel inline."""
        call_id = f"{_PID}-{next(_call_ids)}"
        if len(arguments) > _blobs.INLINE_LIMIT:
            return pb.CallRequest(function=ref, call_id=call_id), arguments
        return pb.CallRequest(function=ref, arguments=arguments, call_id=call_id), None

    def call(self, args: tuple, kwargs: dict) -> Any:
        dispatcher, target, ref = self._resolve()
        arguments = _serialize.dumps((args, kwargs), for_worker=True, what="arguments")
        connection = dispatcher.least_busy()
        if (connection is not None and target.bundle.id in connection.bundles
                and len(arguments) <= _blobs.INLINE_LIMIT):
            done, value = self._call_directly(dispatcher, connection, target, ref, arguments)
            if done:
                return value
        deadline, retries = self._options()
        request, large = self._request(ref, arguments)
        del arguments  # a large payload is now held once, by `large`
        return dispatcher.call("Call", request, target.bundle, _decode_call, deadline, retries, self._what,
                               large)

    def submit(self, args: tuple, kwargs: dict) -> cf.Future:
        coalescer = self._coalescer
        if coalescer is None:
            from ._coalesce import Coalescer

            dispatcher, target, ref = self._resolve()
            with self._lock:
                if self._coalescer is None:
                    self._coalescer = Coalescer(dispatcher, target.bundle, ref, self._what, self._submit_one,
                                                self._options)
            coalescer = self._coalescer
        return coalescer.submit(args, kwargs)

    def _submit_one(self, args: tuple, kwargs: dict, observe: Callable[[float], None]) -> cf.Future:
        """Send one call as its own message; ``observe`` learns the worker's time."""
        dispatcher, target, ref = self._resolve()
        deadline, retries = self._options()
        arguments = _serialize.dumps((args, kwargs), for_worker=True, what="arguments")
        request, large = self._request(ref, arguments)
        del arguments

        def decode(reply: pb.CallReply, fetched: Optional[bytearray] = None) -> Any:
            observe(reply.elapsed_seconds)
            return _decode_call(reply, fetched)

        return dispatcher.submit("Call", request, target.bundle, decode, deadline, retries, self._what, large)

    def map(self, iterables: tuple, timeout: Optional[float] = None,
            chunksize: Optional[int] = None) -> Iterator:
        dispatcher, target, ref = self._resolve()
        _, retries = self._options()
        from ._mapping import MapIterator

        return MapIterator(dispatcher, target, ref, zip(*iterables), timeout, chunksize, retries, self._what)
