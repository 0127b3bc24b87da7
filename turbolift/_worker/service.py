"""The worker's gRPC service: the RPCs of ``proto/turbolift/v1/worker.proto``.

It knows nothing about any program until a bundle arrives. Every failure
around a call (bad bundle, malformed arguments, unknown function) becomes a
gRPC status with a message that says what to do; an exception raised by the
user's function travels back in the reply. Nothing a caller sends may stop
the worker: user code runs under ``except BaseException``.
"""
from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable, Iterator, Optional

import grpc

from .._version import __version__
from .._wire import serialize
from .._wire.blobs import INLINE_LIMIT, BlobError, assemble, chunks
from .._wire.outcomes import pack_exception
from .._wire.protocol import DIFFERENCES_KEY
from ..errors import BundleError, EnvironmentMismatch
from ..v1 import worker_pb2 as pb
from ..v1 import worker_pb2_grpc as pb_grpc
from .blob_store import BlobStore
from .bundle_store import BundleStore, LoadedBundle
from .cancel import CallCancelled, Watchdog


class WorkerService(pb_grpc.WorkerServicer):
    def __init__(self, store: BundleStore, worker_id: str, previous_exit: Optional[str] = None,
                 threads: int = 16) -> None:
        self._previous_exit = previous_exit or ""
        self._store = store
        self._blobs = BlobStore()
        self._worker_id = worker_id
        self._watchdog = Watchdog(slots=threads)

    # -- helpers -------------------------------------------------------------
    def _bundle(self, ref: pb.FunctionRef, context: grpc.ServicerContext) -> Optional[LoadedBundle]:
        try:
            return self._store.load(ref.bundle_id)
        except EnvironmentMismatch as exc:
            context.set_trailing_metadata(((DIFFERENCES_KEY, json.dumps(exc.differences)),))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except BundleError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _function(self, bundle: LoadedBundle, ref: pb.FunctionRef,
                  context: grpc.ServicerContext) -> Callable:
        try:
            return bundle.resolve(ref.module, ref.qualname)
        except (LookupError, AttributeError, ImportError) as exc:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"cannot find {ref.module}.{ref.qualname} in bundle {ref.bundle_id}: {exc}")
        except BaseException as exc:  # SystemExit at import (argparse!) must not go unanswered
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"importing {ref.module} on the worker failed: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _decode(self, data: bytes, what: str, context: grpc.ServicerContext) -> Any:
        try:
            return serialize.loads(data)
        except BaseException as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"could not deserialise the {what}: {type(exc).__name__}: {exc}")

    # -- RPCs ----------------------------------------------------------------
    def Call(self, request: pb.CallRequest, context: grpc.ServicerContext) -> pb.CallReply:
        bundle = self._bundle(request.function, context)
        if bundle is None:
            return pb.CallReply(outcome=pb.BUNDLE_MISSING, worker_id=self._worker_id)
        function = self._function(bundle, request.function, context)
        bundle.activate()
        payload: Any = request.arguments
        if request.arguments_blob:
            try:
                payload = self._blobs.take(request.arguments_blob)
            except BlobError as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        arguments = self._decode(payload, "arguments", context)
        del payload  # a large payload's buffer is not needed while the function runs
        # Exact types: a subclass could run code while being checked or unpacked.
        if not (type(arguments) is tuple and len(arguments) == 2
                and type(arguments[0]) is tuple and type(arguments[1]) is dict):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "arguments must serialise an (args tuple, kwargs dict) pair")
        args, kwargs = arguments
        watchdog = self._watchdog
        started = time.perf_counter()
        try:
            watchdog.begin(context)
            try:
                value = function(*args, **kwargs)
            finally:
                watchdog.end()
            result = serialize.dumps(value, for_worker=False, what="result")
        except BaseException as exc:  # the user's exception travels back
            error = pb.RemoteException(**pack_exception(exc))
            return pb.CallReply(outcome=pb.RAISED, error=error, worker_id=self._worker_id,
                                elapsed_seconds=time.perf_counter() - started)
        elapsed = time.perf_counter() - started
        if len(result) > INLINE_LIMIT:
            ref = pb.BlobRef(blob_id=self._blobs.put(result), size=len(result))
            return pb.CallReply(outcome=pb.RETURNED, result_blob=ref, elapsed_seconds=elapsed,
                                worker_id=self._worker_id)
        return pb.CallReply(outcome=pb.RETURNED, result=result, elapsed_seconds=elapsed,
                            worker_id=self._worker_id)

    def CallBatch(self, request: pb.BatchRequest, context: grpc.ServicerContext) -> pb.BatchReply:
        bundle = self._bundle(request.function, context)
        if bundle is None:
            return pb.BatchReply(outcome=pb.BUNDLE_MISSING, worker_id=self._worker_id)
        function = self._function(bundle, request.function, context)
        bundle.activate()
        items = self._decode(request.items, "batch items", context)
        if type(items) is not list or len(items) != request.count:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"batch items must serialise a list of {request.count} argument tuples")
        started = time.perf_counter()
        outcomes = []
        pairs = request.with_kwargs
        try:
            self._watchdog.begin(context)
            try:
                for item in items:
                    try:
                        if pairs:
                            args, kwargs = item
                            outcomes.append((True, function(*args, **kwargs)))
                        else:
                            outcomes.append((True, function(*item)))
                    except CallCancelled:
                        raise
                    except BaseException as exc:
                        outcomes.append((False, pack_exception(exc)))
            finally:
                self._watchdog.end()
        except CallCancelled:
            context.abort(grpc.StatusCode.CANCELLED, "the batch was cancelled by its caller")
        try:
            results = serialize.dumps(outcomes, for_worker=False)
        except TypeError:
            results = serialize.dumps(_one_by_one(outcomes), for_worker=False)
        return pb.BatchReply(outcome=pb.RETURNED, results=results,
                             elapsed_seconds=time.perf_counter() - started, worker_id=self._worker_id)

    def CallStream(self, request: pb.CallRequest, context: grpc.ServicerContext) -> Iterator[pb.CallEvent]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "streamed calls are not supported by this worker yet")

    def PutBundle(self, request_iterator: Iterator[pb.BundleChunk],
                  context: grpc.ServicerContext) -> pb.PutBundleReply:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first bundle chunk must carry a header")
        header = first.header
        try:
            stored = self._store.put(header.bundle_id, header.size, _data_of(first, request_iterator))
        except BundleError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.PutBundleReply(bundle_id=header.bundle_id, already_present=not stored)

    def PutBlob(self, request_iterator: Iterator[pb.BlobChunk], context: grpc.ServicerContext) -> pb.BlobRef:
        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an empty blob upload: send at least one chunk")
        try:
            data = assemble(first.size, _data_of(first, request_iterator))
        except BlobError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.BlobRef(blob_id=self._blobs.put(data), size=len(data))

    def GetBlob(self, request: pb.BlobRef, context: grpc.ServicerContext) -> Iterator[pb.BlobChunk]:
        try:
            data = self._blobs.take(request.blob_id)
        except BlobError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        for part in chunks(data):
            yield pb.BlobChunk(size=len(data), data=bytes(part))

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeReply:
        return pb.DescribeReply(
            worker_id=self._worker_id, pid=os.getpid(), python_version=platform.python_version(),
            implementation=platform.python_implementation().lower(), turbolift_version=__version__,
            bundles=self._store.ids(), calls_served=self._watchdog.served,
            calls_running=self._watchdog.running,
            previous_exit=self._previous_exit)


def _data_of(first: Any, rest: Iterator[Any]) -> Iterator[bytes]:
    """The bytes of an upload's chunks, the first one already read."""
    yield first.data
    for chunk in rest:
        yield chunk.data


def _one_by_one(outcomes: list) -> list:
    """Replace results that cannot be serialised with the error that says so."""
    safe = []
    for ok, value in outcomes:
        if ok:
            try:
                serialize.dumps(value, for_worker=False)
            except TypeError as exc:
                ok, value = False, pack_exception(exc)
        safe.append((ok, value))
    return safe


