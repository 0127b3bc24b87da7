"""The caller's side of a remote call.

A :class:`Dispatcher` owns one cluster: one channel per worker (reused for
every call), the knowledge of which worker holds which bundle, and the
choice of worker (fewest calls in flight). The stub a marked function
calls (:mod:`turbolift._stub`) hands its calls to a dispatcher.

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
from typing import Any, Callable, Optional

import grpc

from . import _bundle, _serialize
from ._auth import metadata_for
from ._connection import Connection
from ._connection import remaining as _remaining
from .errors import BundleError, ClusterError, EnvironmentMismatch, TurboliftError, WorkerLost
from .platforms import Cluster
from .v1 import worker_pb2 as pb

DEFAULT_RETRIES = 2
READY_TIMEOUT = 60.0
_call_ids = itertools.count()
_PID = os.getpid()


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


def _decode_batch(reply: pb.BatchReply, fetched: Optional[bytearray] = None) -> tuple[list, float, int]:
    """``(outcomes, seconds the worker spent, bytes of the results)``."""
    if reply.outcome != pb.RETURNED:
        raise TurboliftError(f"worker sent an unexpected batch outcome {reply.outcome}")
    return _serialize.loads(reply.results), reply.elapsed_seconds, len(reply.results)


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
        self.lost: list[Connection] = []
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
        self._connections: list[Connection] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._turn = itertools.count()
        self._background = cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix="turbolift-client")
        self._delivery = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix="turbolift-deliver")
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self.cluster.start()

    def connections(self) -> list[Connection]:
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
                fresh = [Connection(address, self.cluster.tls) for address in addresses]
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
            updated = [known.get(address) or Connection(address, self.cluster.tls) for address in addresses]
            gone = [c for c in self._connections if c.address not in set(addresses)]
            self._connections = updated
        for connection in gone:
            connection.alive = False
            # A departing worker (a pod scaled away) may still finish what it
            # runs: close its channel once its calls are done, not before.
            threading.Thread(target=self._close_when_idle, args=(connection,), daemon=True,
                             name=f"turbolift-drain-{connection.address}").start()

    @staticmethod
    def _close_when_idle(connection: Connection, limit: float = 600.0) -> None:
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
        self._delivery.shutdown(wait=False)
        self.cluster.stop()

    # -- choosing and losing workers -------------------------------------------
    def _pick(self, avoid: list[Connection]) -> Connection:
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
        return self._fewest_in_flight(candidates)

    def least_busy(self) -> Optional[Connection]:
        """The live connection with the fewest calls in flight, or None; never waits.

        Ties go round-robin, so that even one caller calling in sequence
        spreads its calls over every worker.
        """
        connections = self._connections
        if len(connections) == 1:
            only = connections[0]
            return only if only.alive else None
        return self._fewest_in_flight([c for c in connections if c.alive])

    def _fewest_in_flight(self, candidates: list) -> Optional[Connection]:
        """The candidate with the fewest calls in flight; ties go round-robin."""
        count = len(candidates)
        if count <= 1:
            return candidates[0] if candidates else None
        start = next(self._turn)
        best = None
        for offset in range(count):
            connection = candidates[(start + offset) % count]
            if best is None or connection.inflight < best.inflight:
                best = connection
        return best

    def _can_retry(self, lost: list[Connection], retries: int) -> bool:
        if len(lost) > retries:
            return False
        return any(c not in lost or c.recovering for c in self.connections())

    def _lost_error(self, connection: Connection, what: str, attempts: int, details: str) -> WorkerLost:
        reason = self.cluster.exit_reason(connection.address, timeout=1.0)
        died = f"died ({reason})" if reason else f"was lost ({details})"
        hint = ("; when this happens on every worker, the function itself ends its process "
                "(os._exit, a crash in native code) or runs out of memory") if reason else ""
        return WorkerLost(f"worker {connection.address} {died} during {what}, after {attempts} "
                          f"attempt(s){hint}", worker=connection.address)

    def _lost(self, connection: Connection) -> None:
        with self._lock:
            if not connection.alive or connection.recovering:
                return
            connection.alive = False
            connection.recovering = True
        # A thread of its own: recovery may take seconds and must never wait
        # behind the retries that are waiting for it.
        threading.Thread(target=self._recover, args=(connection,), daemon=True,
                         name=f"turbolift-recover-{connection.address}").start()

    def _recover(self, connection: Connection) -> None:
        """Replace a lost worker if the platform can; else probe it again later."""
        try:
            address = self.cluster.replace(connection.address, READY_TIMEOUT)
        except Exception:
            address = None
        fresh = None
        if address is not None:
            fresh = Connection(address, self.cluster.tls)
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
             lost: Optional[Connection] = None, details: str = "") -> Any:
        """Run one call and return ``decode(reply, fetched_result)``.

        ``large`` is an argument payload too large to travel inline: it is
        uploaded as a blob to whichever worker the call goes to. ``lost`` is
        a worker an earlier attempt of this call already lost.
        """
        tried: list[Connection] = []
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

    def _send(self, connection: Connection, method: str, request: Any, bundle: _bundle.Bundle,
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

    def _try(self, attempt: _Attempt, connection: Optional[Connection] = None) -> None:
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
        try:
            rpc = getattr(connection.stub, attempt.method)
            future = rpc.future(attempt.request, timeout=_remaining(attempt.deadline),
                                metadata=self._metadata)
        except BaseException as exc:  # e.g. the channel was closed meanwhile: never lose the call
            connection.leave()
            _settle(attempt.out, exc=exc)
            return
        attempt.grpc_future = future
        future.add_done_callback(lambda done: self._on_reply(attempt, connection, done))

    def _later(self, pool: cf.ThreadPoolExecutor, attempt: _Attempt, step: Callable, *args: Any) -> None:
        """Run ``step`` on ``pool``; whatever it raises settles the call instead of vanishing."""
        def guarded() -> None:
            try:
                step(attempt, *args)
            except BaseException as exc:
                _settle(attempt.out, exc=exc)
        try:
            pool.submit(guarded)
        except RuntimeError:  # the dispatcher is closing: answer now
            guarded()

    def _on_reply(self, attempt: _Attempt, connection: Connection, done: Any) -> None:
        # gRPC's channel thread delivers every reply of the channel: hand the
        # work (decoding, and the user's own future callbacks, which may wait
        # on other calls) to a delivery thread rather than block it.
        connection.leave()
        self._later(self._delivery, attempt, self._handle_reply, connection, done)

    def _handle_reply(self, attempt: _Attempt, connection: Connection, done: Any) -> None:
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
            self._lose(attempt, connection, exc.details())
            return
        if reply.outcome == pb.BUNDLE_MISSING:
            if attempt.uploaded:
                _settle(attempt.out, exc=BundleError(
                    f"worker {connection.address} lost bundle {attempt.bundle.id} right after "
                    "it was uploaded; is its cache directory writable?"))
                return
            self._later(self._background, attempt, self._upload_then_try, connection)
            return
        connection.bundles.add(attempt.bundle.id)
        if attempt.method == "Call" and reply.HasField("result_blob"):
            self._later(self._background, attempt, self._fetch_then_settle, connection, reply)
            return
        try:
            value = attempt.decode(reply)
        except BaseException as exc:
            _settle(attempt.out, exc=exc)
        else:
            _settle(attempt.out, value=value)

    def _lose(self, attempt: _Attempt, connection: Connection, details: str) -> None:
        """The worker went away mid-call: retry elsewhere (on a background thread) or fail."""
        attempt.lost.append(connection)
        self._lost(connection)
        self._later(self._background, attempt, self._retry_or_fail, connection, details)

    def _fetch_then_settle(self, attempt: _Attempt, connection: Connection, reply: Any) -> None:
        try:
            fetched = connection.get_blob(reply.result_blob, self._metadata, attempt.deadline)
            value = attempt.decode(reply, fetched)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._lose(attempt, connection, exc.details())
                return
            _settle(attempt.out, exc=_translate(exc, connection.address, attempt.what))
        except BaseException as exc:
            _settle(attempt.out, exc=exc)
        else:
            _settle(attempt.out, value=value)

    def _retry_or_fail(self, attempt: _Attempt, connection: Connection, details: str) -> None:
        if self._can_retry(attempt.lost, attempt.retries):
            self._try(attempt)
        else:
            _settle(attempt.out, exc=self._lost_error(connection, attempt.what, len(attempt.lost), details))

    def _upload_then_try(self, attempt: _Attempt, connection: Connection) -> None:
        connection.bundles.discard(attempt.bundle.id)
        try:
            connection.ensure_bundle(attempt.bundle, self._metadata, attempt.deadline)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._lose(attempt, connection, exc.details())
                return
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
