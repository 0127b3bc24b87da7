"""Sending calls to the workers of one cluster.

A :class:`Dispatcher` owns one cluster: one :class:`Connection` per worker
(reused for every call), the knowledge of which worker holds which bundle,
and the choice of worker (fewest calls in flight, ties in turn). It runs a
call as one exchange on a Session stream of the chosen worker, in the
calling thread; :mod:`.asynchronous` runs the same for futures.

Calls are optimistic about bundles: a call is sent straight away, and only a
worker that answers BUNDLE_MISSING gets the bundle uploaded, on the same
stream, before the call is sent again. A call whose worker is lost (gone,
or silent) is sent to another worker, since marked functions are assumed
pure.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
import time
from typing import Any, Optional

import grpc

from .. import _runtime
from .._wire.auth import discovered_token
from .._wire.protocol import FRAME_DATA
from ..errors import BundleError, ClusterError, WorkerLost
from ..platforms.base import Cluster
from ..v1 import worker_pb2 as pb
from .calls import Call, remaining
from .connection import Connection, WorkerEnded
from .daemon_pool import DaemonPool
from .exchange import Exchange, Failed, invoke, upload
from .failures import from_failure, is_lost, translate
from .futures import Submitted
from .iterators import RemoteIterator
from .late_bundles import shipper
from .monitor import DEADLINE, SILENT, SILENT_SECONDS, Monitor
from .session import Stream, StreamEnded

# What happens, for `python -m turbolift -v` (silent unless the program or -v turns it on).
log = logging.getLogger("turbolift")

READY_TIMEOUT = 60.0
UPLOADS_PER_CALL = 2    # per bundle: a worker restarted at the same address may lose the first upload


class Dispatcher:
    """Sends calls for one cluster; started lazily, closed at exit."""

    def __init__(self, cluster: Cluster, token: Optional[str] = None, prefix: bool = True) -> None:
        self.cluster = cluster
        self._token = cluster.token if cluster.token is not None else token
        self.prefix = prefix            # name function and worker in forwarded output
        self._monitor = Monitor(busy=cluster.busy_in_native_code)
        self._connections: list[Connection] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._turn = itertools.count()
        self.retries = 0                # attempts sent again because their worker was lost (figures, tests)
        self.closed = False
        self._futures: Any = None       # the asynchronous path, made on first use
        self.submitted = Submitted()    # the program's submits, waited for at its end
        self._first_calls: set = set()  # (function, worker) pairs already called, for the log
        self._started = False

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            first, self._started = not self._started, True
        if first:
            log.info("starting %r", self.cluster)
        self.cluster.start()

    def connect(self, address: str) -> Connection:
        # A worker started without a token made one, which this user can read.
        token = self._token if self._token is not None else discovered_token(address)
        return Connection(address, self.cluster.tls, token, self._monitor)

    def connections(self) -> list[Connection]:
        """The connections, once every worker is healthy (blocks the first time)."""
        if self._connections:
            return self._connections
        if self.closed:   # (a daemon thread at the program's end waits here, holding no lock)
            _runtime.stop_daemon_thread_at_exit()
            raise ClusterError("this cluster has been shut down")
        with self._lock:
            if self.closed:   # (closed while this waited for the lock)
                raise ClusterError("this cluster has been shut down")
            if not self._connections:
                timeout = self.cluster.ready_timeout
                started = time.monotonic()
                addresses = self.cluster.wait_ready(timeout)
                if not addresses:
                    raise ClusterError(f"{self.cluster!r} has no workers")
                fresh = self._all_healthy([self.connect(address) for address in addresses], timeout)
                self._connections = fresh
                log.info("%d worker(s) ready in %.2f s: %s", len(fresh), time.monotonic() - started,
                         ", ".join(addresses))
                self.cluster.subscribe(self._addresses_changed)
        return self._connections

    def _all_healthy(self, connections: list[Connection], timeout: float) -> list[Connection]:
        """Wait until every connection's worker is healthy, checking them side by side (each check
        waits for its channel to connect: one after the other, N workers cost N connections' time).
        A worker that exited meanwhile is replaced, when the platform can, once."""
        if len(connections) == 1:
            return [self._healthy(connections[0], timeout)]
        # (Daemon threads: a first call from an exit handler connects too, see .daemon_pool.)
        pool = DaemonPool(min(16, len(connections)), "turbolift-health-check")
        try:
            checks = [pool.submit(self._healthy, connection, timeout) for connection in connections]
            return [check.result() for check in checks]   # the first failure is raised
        finally:
            pool.close()

    def _healthy(self, connection: Connection, timeout: float) -> Connection:
        try:
            connection.wait_healthy(timeout, ended=lambda: self.cluster.exit_reason(connection.address))
            return connection
        except WorkerEnded as ended:
            address = self.cluster.replace(connection.address, timeout)
            if address is None:   # a platform that restarts workers in place (a pod's container)
                connection.wait_healthy(timeout)
                return connection
            log.info("%s; replaced by %s", ended, address)
            connection.close()
        fresh = self.connect(address)
        fresh.wait_healthy(timeout)
        return fresh

    @property
    def futures(self) -> Any:
        """The asynchronous path (:class:`.asynchronous.AsyncCalls`) of this dispatcher."""
        if self._futures is None:
            with self._lock:
                if self._futures is None:
                    from .asynchronous import AsyncCalls

                    self._futures = AsyncCalls(self)
        return self._futures

    def _addresses_changed(self, addresses: list[str]) -> None:
        """Follow a platform whose workers come and go (keep known ones' state)."""
        with self._lock:
            if self.closed:
                return
            known = {c.address: c for c in self._connections}
            updated = [known.get(address) or self.connect(address) for address in addresses]
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
            self.closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        if self._futures is not None:
            self._futures.close()
        self._monitor.close()
        self.cluster.stop()

    # -- choosing and losing workers -------------------------------------------
    def pick(self, avoid: list[Connection]) -> Connection:
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
        chosen = self._fewest_in_flight(candidates)
        assert chosen is not None
        return chosen

    def _fewest_in_flight(self, candidates: list[Connection]) -> Optional[Connection]:
        """The candidate with the fewest calls in flight; ties go round-robin, so that
        even one caller calling in sequence spreads its calls over every worker."""
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

    def can_retry(self, lost: list[Connection], retries: int) -> bool:
        if len(lost) > retries:
            return False
        return any(c not in lost or c.recovering for c in self.connections())

    def lost_error(self, connection: Connection, what: str, attempts: int, details: str) -> WorkerLost:
        reason = self.cluster.exit_reason(connection.address, timeout=1.0)
        died = f"died ({reason})" if reason else f"was lost ({details})"
        hint = ("; when this happens on every worker, the function itself ends its process "
                "(os._exit, a crash in native code) or runs out of memory") if reason else ""
        return WorkerLost(f"worker {connection.address} {died} during {what}, after {attempts} "
                          f"attempt(s){hint}", worker=connection.address)

    def lose(self, connection: Connection) -> None:
        """Mark ``connection``'s worker lost and start replacing it (once)."""
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
        except Exception as exc:
            log.info("could not replace worker %s: %s", connection.address, exc)
            address = None
        fresh = None
        if address is not None:
            fresh = self.connect(address)
            try:
                fresh.wait_healthy(READY_TIMEOUT)
            except ClusterError:
                fresh.close()
                fresh = None
        else:
            time.sleep(1.0)  # a static worker: give its supervisor time to restart it
        if fresh is not None:
            log.info("worker %s replaced by %s", connection.address, fresh.address)
        with self._changed:
            if fresh is not None:
                self._connections = [fresh if c is connection else c for c in self._connections]
            else:
                connection.alive = True  # let the next call find out
            connection.recovering = False
            self._changed.notify_all()
        if fresh is not None:
            connection.close()

    # -- calls -----------------------------------------------------------------------
    def call(self, call: Call) -> Any:
        """Run ``call`` and return its decoded value, or an iterator of its items, or raise.

        A lost worker (gone, or silent for SILENT_SECONDS) costs one attempt:
        the call is sent to another worker while retries are left.
        """
        tried: list[Connection] = []
        while True:
            connection = self.pick(tried)
            try:
                return self._attempt(call, connection)
            except _Lost as lost:
                tried.append(connection)
                self.lose(connection)
                if not self.can_retry(tried, call.retries):
                    log.info("worker %s lost during %s (%s); no retry left", connection.address, call.what,
                             lost.details)
                    raise self.lost_error(connection, call.what, len(tried), lost.details) from None
                log.info("worker %s lost during %s (%s); retrying on another worker (attempt %d of %d)",
                         connection.address, call.what, lost.details, len(tried) + 1, call.retries + 1)
                with self._lock:
                    self.retries += 1

    def submit(self, call: Call) -> cf.Future:
        """Start ``call``; return a future of its value."""
        return self.futures.submit(call)

    def _attempt(self, call: Call, connection: Connection) -> Any:
        """One attempt on ``connection``: the exchange, uploads of missing bundles, the result."""
        try:
            stream = connection.checkout(call.deadline)
        except grpc.RpcError as exc:
            raise self._failure(exc, None, call, connection) from None
        exchange = None
        in_order: Optional[bool] = False   # None: an iterator took the stream over
        try:
            if not call.handle.attach(stream):
                raise cf.CancelledError(f"{call.what} was cancelled")
            exchange = Exchange(stream, call.label, connection.worker_id, self.prefix, call.deadline,
                                call.streams, shipper(call, connection))
            try:
                answer = self._exchange(call, connection, exchange)
            except Failed as failed:
                in_order = True
                raise from_failure(failed.failure, connection.address, call.what) from None
            except (grpc.RpcError, StreamEnded) as exc:
                raise self._failure(exc, stream, call, connection) from None
            if isinstance(answer, _Iterator):
                in_order = None
                return RemoteIterator(answer.exchange, call.what, connection.checkin, connection.discard)
            in_order = True
            return call.decode(*answer)  # the value, or the function's own exception rebuilt
        finally:
            if in_order is not None:
                if exchange is not None:
                    exchange.close()
                if in_order:
                    connection.checkin(stream)
                else:
                    connection.discard(stream)

    def _exchange(self, call: Call, connection: Connection, exchange: Exchange) -> Any:
        preloading = connection.preloads.get(call.bundle.id)
        if preloading is not None:
            # The worker is being sent this bundle ahead of its first call (:mod:`.preload`):
            # wait for that rather than send it twice.
            preloading.wait(remaining(call.deadline))
        uploads = 0
        if len(call.payload) > FRAME_DATA and call.bundle.id not in connection.bundles:
            # A large call is not sent twice just to learn the bundle is missing.
            _upload(exchange, call.bundle, connection)
            uploads += 1
        while True:
            reply, data = invoke(exchange, call)
            if reply.outcome == pb.BUNDLE_MISSING:
                missing = call.bundle_named(reply.missing_bundle)
                if missing is None or uploads >= UPLOADS_PER_CALL * (1 + len(call.extra)):
                    raise BundleError(f"worker {connection.address} lost bundle {reply.missing_bundle} right "
                                      "after it was uploaded; is its cache directory writable?")
                _upload(exchange, missing, connection)
                uploads += 1
                continue
            connection.bundles.add(call.bundle.id)
            if log.isEnabledFor(logging.INFO):   # (checked first: this runs on every call)
                first = (call.label, connection.address)
                if first not in self._first_calls:
                    self._first_calls.add(first)
                    log.info("first call of %s on worker %s (%s)", call.label, connection.worker_id or "?",
                             connection.address)
            if reply.outcome == pb.ITERATOR:
                return _Iterator(exchange)
            return reply, data

    def _failure(self, exc: BaseException, stream: Optional[Stream], call: Call,
                 connection: Connection) -> BaseException:
        """What a failed stream means: the deadline, a cancel, a lost worker, or another error."""
        reason = stream.stopped_because if stream is not None else None
        if reason is None and call.deadline is not None and time.monotonic() >= call.deadline:
            reason = DEADLINE   # e.g. a new stream cancelled by the monitor during its handshake
        if reason == DEADLINE:
            return TimeoutError(f"{call.what} did not finish before its deadline")
        if reason == "cancelled" or call.handle.cancelled:
            return cf.CancelledError(f"{call.what} was cancelled")
        if reason == SILENT:
            return _Lost(f"no word from it for {SILENT_SECONDS:.0f}s (hung, stopped or cut off)")
        if isinstance(exc, StreamEnded):
            return _Lost(str(exc))
        assert isinstance(exc, grpc.RpcError)
        if is_lost(exc) or exc.code() == grpc.StatusCode.CANCELLED:
            return _Lost(exc.details() or exc.code().name)
        return translate(exc, connection.address, call.what)


def _upload(exchange: Exchange, bundle: Any, connection: Connection) -> None:
    started = time.monotonic()
    upload(exchange, bundle)
    log.info("uploaded bundle %s (%s bytes) to worker %s in %.0f ms", bundle.id[:19], f"{len(bundle.data):,}",
             connection.address, 1000 * (time.monotonic() - started))


class _Lost(Exception):
    """Internal: the worker of an attempt was lost."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


class _Iterator:
    """Internal: the call returned an iterator; its exchange continues on the stream."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
