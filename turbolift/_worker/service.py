"""The worker's unary RPCs, kept for callers of earlier versions (callers now use Sessions).

Each runs exactly what a Session exchange runs (:mod:`.execution`, the
bundle and function lookups of :class:`.state.WorkerState`); a
:class:`~.state.Failure` becomes the RPC's status. The token was checked by
the interceptor before any of this runs.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator, Optional

import grpc

from .._wire.blobs import INLINE_LIMIT, BlobError, assemble, chunks
from .._wire.protocol import DIFFERENCES_KEY
from ..errors import BundleError
from ..v1 import worker_pb2 as pb
from ..v1 import worker_pb2_grpc as pb_grpc
from . import execution
from .bundle_store import LoadedBundle
from .cancel import Ticket
from .state import Failure, WorkerState


def _abort(context: grpc.ServicerContext, failure: Failure) -> None:
    if failure.differences is not None:
        context.set_trailing_metadata(((DIFFERENCES_KEY, json.dumps(failure.differences)),))
    context.abort(failure.code, failure.details)


def _ticket(context: grpc.ServicerContext) -> Ticket:
    remaining = context.time_remaining()
    deadline = time.monotonic() + remaining if remaining is not None else None
    return Ticket(context.is_active, deadline)


class WorkerService(pb_grpc.WorkerServicer):
    def __init__(self, state: WorkerState) -> None:
        self._state = state

    def _target(self, ref: pb.FunctionRef,
                context: grpc.ServicerContext) -> Optional[tuple[LoadedBundle, Any]]:
        try:
            bundle = self._state.bundle(ref.bundle_id)
            if bundle is None:
                return None
            function = self._state.function(bundle, ref)
        except Failure as failure:
            _abort(context, failure)
            raise  # pragma: no cover (abort raises)
        bundle.activate()
        return bundle, function

    def Call(self, request: pb.CallRequest, context: grpc.ServicerContext) -> pb.CallReply:
        worker_id = self._state.worker_id
        target = self._target(request.function, context)
        if target is None:
            return pb.CallReply(outcome=pb.BUNDLE_MISSING, worker_id=worker_id)
        payload: Any = request.arguments
        if request.arguments_blob:
            try:
                payload = self._state.blobs.take(request.arguments_blob)
            except BlobError as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        outcome = execution.call(self._state.watchdog, _ticket(context), target[1], payload)
        del payload
        if outcome.kind == execution.ITERATOR:
            execution.close_iterator(self._state.watchdog, outcome.value)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "the function returned an iterator, which the unary Call cannot stream: "
                          "upgrade the caller, whose Sessions stream iterators")
        self._check(outcome, context)
        if outcome.kind == execution.RAISED:
            return pb.CallReply(outcome=pb.RAISED, error=pb.RemoteException(**outcome.value),
                                worker_id=worker_id, elapsed_seconds=outcome.elapsed)
        result = outcome.value
        if len(result) > INLINE_LIMIT:
            ref = pb.BlobRef(blob_id=self._state.blobs.put(result), size=len(result))
            return pb.CallReply(outcome=pb.RETURNED, result_blob=ref, elapsed_seconds=outcome.elapsed,
                                worker_id=worker_id)
        return pb.CallReply(outcome=pb.RETURNED, result=result, elapsed_seconds=outcome.elapsed,
                            worker_id=worker_id)

    @staticmethod
    def _check(outcome: execution.Outcome, context: grpc.ServicerContext) -> None:
        if outcome.kind == execution.INVALID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, outcome.value)
        if outcome.kind == execution.CANCELLED:
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled by its caller")

    def CallBatch(self, request: pb.BatchRequest, context: grpc.ServicerContext) -> pb.BatchReply:
        worker_id = self._state.worker_id
        target = self._target(request.function, context)
        if target is None:
            return pb.BatchReply(outcome=pb.BUNDLE_MISSING, worker_id=worker_id)
        outcome = execution.batch(self._state.watchdog, _ticket(context), target[1], request.items,
                                  request.count, request.with_kwargs)
        self._check(outcome, context)
        if outcome.kind == execution.RAISED:  # not one item's exception: the batch itself failed
            context.abort(grpc.StatusCode.INTERNAL, f"the batch failed: {outcome.value['message']}")
        return pb.BatchReply(outcome=pb.RETURNED, results=outcome.value, elapsed_seconds=outcome.elapsed,
                             worker_id=worker_id)

    def PutBundle(self, request_iterator: Iterator[pb.BundleChunk],
                  context: grpc.ServicerContext) -> pb.PutBundleReply:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first bundle chunk must carry a header")
        header = first.header
        try:
            stored = self._state.store.put(header.bundle_id, header.size, _data_of(first, request_iterator))
        except BundleError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OSError as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return pb.PutBundleReply(bundle_id=header.bundle_id, already_present=not stored)

    def PutBlob(self, request_iterator: Iterator[pb.BlobChunk], context: grpc.ServicerContext) -> pb.BlobRef:
        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an empty blob upload: send at least one chunk")
        try:
            data = assemble(first.size, _data_of(first, request_iterator))
        except BlobError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.BlobRef(blob_id=self._state.blobs.put(data), size=len(data))

    def GetBlob(self, request: pb.BlobRef, context: grpc.ServicerContext) -> Iterator[pb.BlobChunk]:
        try:
            data = self._state.blobs.take(request.blob_id)
        except BlobError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        for part in chunks(data):
            yield pb.BlobChunk(size=len(data), data=bytes(part))

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeReply:
        return self._state.describe()


def _data_of(first: Any, rest: Iterator[Any]) -> Iterator[bytes]:
    """The bytes of an upload's chunks, the first one already read."""
    yield first.data
    for chunk in rest:
        yield chunk.data
