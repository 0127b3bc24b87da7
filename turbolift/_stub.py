"""The client stub behind a marked function when distribution is on."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from typing import Any, Callable, Iterator, Optional

import grpc

from . import _blobs, _bundle, _runtime, _serialize
from ._client import _PID, DEFAULT_RETRIES, Dispatcher, _call_ids, _decode_call, _translate
from ._connection import Connection
from .v1 import worker_pb2 as pb


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
        if resolved is not None and resolved[1].watched and not resolved[1].is_current():
            resolved = None  # a global it reads was rebound: ship the function anew
        if resolved is None and self._parent is not None:
            resolved = self._resolved = self._parent._resolve()
        if resolved is None:
            with self._lock:
                current = self._resolved
                if current is None or not current[1].is_current():
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

    def _timeout(self) -> Optional[float]:
        """The per-call deadline in seconds: the function's own, else the configured default."""
        timeout = self._function.timeout
        return _runtime.setting("timeout") if timeout is None else timeout

    def _options(self) -> tuple[Optional[float], int]:
        timeout = self._timeout()
        retries = self._function.retries
        if retries is None:
            retries = _runtime.setting("retries", DEFAULT_RETRIES)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        return deadline, retries

    def _call_directly(self, dispatcher: Dispatcher, connection: Connection, target: _bundle.Target,
                       ref: pb.FunctionRef, arguments: bytes) -> tuple[bool, Any]:
        """The common case, kept short: one attempt on a live worker that holds the bundle.

        Returns ``(True, value)``, raises the call's exception, or returns
        ``(False, None)`` when nothing ran (the worker lacked the bundle) so
        that the general path uploads and calls again. A lost worker hands
        the call to the general path, which counts this attempt and retries.
        """
        timeout = self._timeout()
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
        dispatcher, target, ref = self._resolve()
        coalescer = self._coalescer
        if coalescer is None or coalescer.ref is not ref:  # first use, or the function was shipped anew
            from ._coalesce import Coalescer

            with self._lock:
                if self._coalescer is None or self._coalescer.ref is not ref:
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

        return MapIterator(dispatcher, target, ref, zip(*iterables), timeout, chunksize, retries, self._what,
                           self._timeout())
