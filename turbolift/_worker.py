"""The generic worker: a gRPC server that runs calls from shipped bundles.

It knows nothing about any program until a bundle arrives. Every failure
around a call (bad bundle, malformed arguments, unknown function) becomes a
gRPC status with a message that says what to do; an exception raised by the
user's function travels back in the reply. Nothing a caller sends may stop
the worker: user code runs under ``except BaseException``.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterator, Optional

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import __version__, _runtime, _serialize
from ._auth import TokenInterceptor
from ._blobs import INLINE_LIMIT, BlobError, BlobStore, assemble, chunks
from ._bundle_store import BundleStore, LoadedBundle
from ._cancel import CallCancelled, Watchdog
from ._tls import TLS
from .errors import BundleError, EnvironmentMismatch
from .v1 import worker_pb2 as pb
from .v1 import worker_pb2_grpc as pb_grpc

SERVICE_NAME = "turbolift.v1.Worker"
SPARE_THREADS = 128   # gRPC threads beyond those running user code (waiting calls, health, uploads)
MESSAGE_LIMIT = 2**31 - 1
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.so_reuseport", 0),
    # Callers ping every few seconds to notice a dead link; allow it.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


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
            context.set_trailing_metadata((("turbolift-differences", json.dumps(exc.differences)),))
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
            return _serialize.loads(data)
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
            result = _serialize.dumps(value, for_worker=False, what="result")
        except BaseException as exc:  # the user's exception travels back
            error = pb.RemoteException(**_serialize.pack_exception(exc))
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
                        outcomes.append((False, _serialize.pack_exception(exc)))
            finally:
                self._watchdog.end()
        except CallCancelled:
            context.abort(grpc.StatusCode.CANCELLED, "the batch was cancelled by its caller")
        try:
            results = _serialize.dumps(outcomes, for_worker=False)
        except TypeError:
            results = _serialize.dumps(_one_by_one(outcomes), for_worker=False)
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
        import platform

        return pb.DescribeReply(
            worker_id=self._worker_id, pid=os.getpid(), python_version=platform.python_version(),
            implementation=platform.python_implementation().lower(), turbolift_version=__version__,
            bundles=self._store.ids(), calls_served=self._watchdog.served,
            calls_running=self._watchdog.running,
            previous_exit=self._previous_exit)


def _parsing(method: Callable, message_type: Any, streaming: bool) -> Callable:
    """Wrap ``method`` so that a malformed message is INVALID_ARGUMENT, not INTERNAL.

    gRPC's own deserialisation failure answers a bare "Exception
    deserializing request!"; parsing here lets the caller know what was wrong.
    """
    name = message_type.DESCRIPTOR.full_name

    def parse(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return message_type.FromString(raw)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {name} message: {exc}")

    if streaming:
        def handle_stream(raw_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            return method((parse(raw, context) for raw in raw_iterator), context)
        return handle_stream

    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        return method(parse(raw, context), context)
    return handle


def _handlers(service: WorkerService) -> grpc.GenericRpcHandler:
    serialize = _serialize_message
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Call": grpc.unary_unary_rpc_method_handler(
            _parsing(service.Call, pb.CallRequest, False), response_serializer=serialize),
        "CallBatch": grpc.unary_unary_rpc_method_handler(
            _parsing(service.CallBatch, pb.BatchRequest, False), response_serializer=serialize),
        "CallStream": grpc.unary_stream_rpc_method_handler(
            _parsing(service.CallStream, pb.CallRequest, False), response_serializer=serialize),
        "PutBundle": grpc.stream_unary_rpc_method_handler(
            _parsing(service.PutBundle, pb.BundleChunk, True), response_serializer=serialize),
        "PutBlob": grpc.stream_unary_rpc_method_handler(
            _parsing(service.PutBlob, pb.BlobChunk, True), response_serializer=serialize),
        "GetBlob": grpc.unary_stream_rpc_method_handler(
            _parsing(service.GetBlob, pb.BlobRef, False), response_serializer=serialize),
        "Describe": grpc.unary_unary_rpc_method_handler(
            _parsing(service.Describe, pb.DescribeRequest, False), response_serializer=serialize),
    })


def _serialize_message(message: Any) -> bytes:
    return message.SerializeToString()


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
                _serialize.dumps(value, for_worker=False)
            except TypeError as exc:
                ok, value = False, _serialize.pack_exception(exc)
        safe.append((ok, value))
    return safe


def is_loopback(listen: str) -> bool:
    if listen.startswith("unix:"):
        return True
    host = listen.rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def check_exposure(listen: str, token: Optional[str], tls: Optional[TLS]) -> None:
    """Refuse to serve beyond loopback unless callers are authenticated.

    A token, or mutual TLS (a CA that client certificates must chain to),
    authenticates callers; TLS without client certificates only encrypts,
    so alone it is not enough.
    """
    if is_loopback(listen) or token or (tls is not None and tls.mutual):
        return
    raise SystemExit(
        f"refusing to listen on {listen} without authentication: a worker runs any code its callers "
        "send. Give it a token (--token-file FILE, the same file the callers use) or mutual TLS "
        "(--tls-cert, --tls-key and --tls-ca), or listen on 127.0.0.1.")


def serve(listen: str, *, cache_dir: str, token: Optional[str] = None, threads: int = 16,
          worker_id: Optional[str] = None, install_requirements: bool = False,
          previous_exit: Optional[str] = None, tls: Optional[TLS] = None) -> tuple[grpc.Server, str]:
    """Start a worker server; return it and the address it listens on.

    Refuses a non-loopback ``listen`` without a token: a worker runs any
    code its callers send.
    """
    check_exposure(listen, token, tls)
    _runtime.enter_worker_mode()
    # `python -m` put the current directory first on sys.path: a worker must
    # find the program's modules only in the bundles it was sent.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    store = BundleStore(cache_dir, install_requirements=install_requirements)
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    interceptors = [TokenInterceptor(token)] if token else []
    # ``threads`` calls run user code at once; the pool has room beyond that
    # so that health checks, uploads and Describe are answered meanwhile.
    pool = futures.ThreadPoolExecutor(max_workers=threads + SPARE_THREADS,
                                      thread_name_prefix="turbolift-call")
    server = grpc.server(pool, interceptors=interceptors, options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((_handlers(WorkerService(store, worker_id, previous_exit, threads)),))
    health_service = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    if tls is not None:
        port = server.add_secure_port(listen, tls.server_credentials())
    else:
        port = server.add_insecure_port(listen)
    if port == 0 and not listen.startswith("unix:"):
        raise SystemExit(f"could not listen on {listen}: is the address in use or not local?")
    server.start()
    for service in ("", SERVICE_NAME):
        health_service.set(service, health_pb2.HealthCheckResponse.SERVING)
    address = listen if listen.startswith("unix:") else f"{listen.rsplit(':', 1)[0]}:{port}"
    return server, address


def _watch_parent(server: grpc.Server, read_token_first: bool) -> Optional[str]:
    """Stop the server when stdin reaches end-of-file or our parent changes."""
    parent = os.getppid()
    stop = threading.Event()

    def on_stdin_closed() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    def on_parent_gone() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=on_stdin_closed, daemon=True, name="turbolift-stdin").start()
    threading.Thread(target=on_parent_gone, daemon=True, name="turbolift-parent").start()
    return stop  # type: ignore[return-value]


def main(listen: str, cache_dir: str, token: Optional[str], token_stdin: bool, ready_fd: Optional[int],
         exit_with_stdin: bool, threads: int, worker_id: Optional[str],
         install_requirements: bool = False, previous_exit: Optional[str] = None,
         tls: Optional[TLS] = None) -> int:
    if token_stdin:
        token = sys.stdin.buffer.readline().decode().strip() or None
    server, address = serve(listen, cache_dir=cache_dir, token=token, threads=threads, worker_id=worker_id,
                            install_requirements=install_requirements, previous_exit=previous_exit, tls=tls)
    if ready_fd is not None:
        os.write(ready_fd, (address + "\n").encode())
        os.close(ready_fd)
    else:
        print(f"turbolift worker listening on {address}", flush=True)
    if exit_with_stdin:
        stop = _watch_parent(server, token_stdin)
        try:
            stop.wait()  # type: ignore[attr-defined]
        except KeyboardInterrupt:
            pass
        server.stop(grace=0.5).wait()
        return 0
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1.0).wait()
    return 0
