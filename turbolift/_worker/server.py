"""Starting and running the worker's gRPC server.

:func:`serve` starts a server for :class:`WorkerOptions` and returns it with
the address it listens on; :func:`run` serves until stopped (by a signal,
or, for a worker started by a launcher, when its parent goes away).
Problems with the options raise :class:`~turbolift.errors.ConfigurationError`
instead of exiting, so that the command line decides how to report them.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2

from .. import _runtime
from .._wire import allocator, bulk, streamed
from .._wire.protocol import MESSAGE_LIMIT, SERVICE_NAME, WORKER_RECEIVE_LIMIT
from .._wire.tls import TLS
from ..errors import ConfigurationError
from ..v1 import worker_pb2 as pb
from . import capture, forked_call, nested, repeated_imports, stdin, tokens
from .bundle_store import BundleStore
from .cancel import Watchdog
from .exposure import check_exposure
from .interceptor import TokenInterceptor
from .launcher import RUN_DIR_PREFIX, default_cache_dir, report_ready
from .metrics import METRICS
from .nested import NestedStub, PulledIterator
from .session import MAX_PENDING, MAX_SESSIONS, SessionHandler
from .state import WorkerState

UNARY_THREADS = 32    # Describe and health Watch (calls and uploads travel on Sessions)
HEALTH_THREADS = 4    # health checks are answered by threads of their own, however busy the worker is

SERVER_OPTIONS = [
    # Every message is small (large payloads travel in chunks): anything bigger
    # is refused by gRPC before it is read, authenticated or not.
    ("grpc.max_receive_message_length", WORKER_RECEIVE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.so_reuseport", 0),
    # Callers ping every few seconds to notice a dead link; allow it.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker serves. ``listen`` is ``HOST:PORT`` (port 0 picks one) or ``unix:PATH``."""

    listen: str = "127.0.0.1:50051"
    cache_dir: str = field(default_factory=default_cache_dir)
    token: Optional[str] = None
    threads: int = 16                      # calls of user code running at once
    worker_id: Optional[str] = None        # the name Describe reports
    install_requirements: bool = False
    previous_exit: Optional[str] = None    # how the previous server at this address ended
    tls: Optional[TLS] = None
    metrics_port: Optional[int] = None     # Prometheus metrics over HTTP (None: off)
    workdir: Optional[str] = None          # the working directory calls run in (None: where it started)


def _enter(workdir: str) -> None:
    """Run calls in ``workdir``: a local cluster passes its program's working directory, so that a
    relative path means in a call what it means in the program. Only once the directory the worker
    started in is off ``sys.path``: the program's modules still come only from bundles. One that
    cannot be entered leaves the worker where it is, and the worker says so."""
    try:
        os.chdir(workdir)
    except OSError as exc:
        print(f"turbolift worker: calls run in {os.getcwd()}, not in {workdir}: {exc.strerror}",
              file=sys.stderr, flush=True)


def _parsing(method: Callable, message_type: Any) -> Callable:
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

    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        return method(parse(raw, context), context)
    return handle


def _serialize_message(message: Any) -> bytes:
    return message.SerializeToString()


class _ServingCheck:
    """``grpc.health.v1.Health/Check``, answered SERVING at once, without reading the request.

    A unary handler holds a thread until the request's message arrives, so
    RPCs that never send one could take every thread health checks have.
    Registered as a non-blocking stream handler instead, it sends the answer
    and the status straight away and holds nothing: a probe is answered
    however many RPCs are stuck and however many calls wait. (It cannot tell
    the service name asked for; this worker serves all of its services.)
    """

    experimental_non_blocking = True

    def __init__(self, pool: futures.ThreadPoolExecutor) -> None:
        self.experimental_thread_pool = pool

    def __call__(self, request_iterator: Any, context: grpc.ServicerContext, send: Callable) -> None:
        send(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING))
        send(None)


def _health_handlers(servicer: health.HealthServicer) -> grpc.GenericRpcHandler:
    """The standard health service: checks on threads of their own, answered without waiting."""
    pool = futures.ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="turbolift-health")
    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.stream_stream_rpc_method_handler(_ServingCheck(pool),
                                                       response_serializer=_serialize_message),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=_serialize_message),
    })


def _handlers(state: WorkerState, sessions: SessionHandler) -> grpc.GenericRpcHandler:
    serialize = _serialize_message

    def describe(request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeReply:
        return state.describe()

    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Session": grpc.stream_stream_rpc_method_handler(sessions, response_serializer=bulk.serialize),
        "Describe": grpc.unary_unary_rpc_method_handler(
            _parsing(describe, pb.DescribeRequest), response_serializer=serialize),
    })


def _forked_by_a_call() -> None:
    """In a child a call forked (multiprocessing's fork start method, ``os.fork``): gRPC does not
    survive fork, so the child runs as it would without turbolift: marked functions in place, output
    to this worker's own streams, stdin at its end (before: the child's first print, read or marked
    call waited for ever on the parent's stream)."""
    _runtime.forked_child()
    forked_call.note_fork()   # the call's function ends the child when it returns or raises
    capture.forget_calls()
    nested.forget_calls()
    repeated_imports.reset()


def serve(options: WorkerOptions) -> tuple[grpc.Server, str]:
    """Start a worker server; return it and the address it listens on.

    Raises ConfigurationError for a non-loopback address without
    authentication, or an address it cannot listen on.
    """
    listen = options.listen
    check_exposure(listen, options.token, options.tls)
    # Marked functions called by the functions we run go back to the caller.
    _runtime.enter_worker_mode(bind=NestedStub)
    os.register_at_fork(after_in_child=_forked_by_a_call)
    streamed.install(PulledIterator)   # iterators passed as arguments are pulled from their caller
    capture.install()
    stdin.install()   # a call reads its caller's standard input
    # `python -m` put the current directory first on sys.path: a worker must
    # find the program's modules only in the bundles it was sent.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    if options.workdir:
        _enter(options.workdir)
    store = BundleStore(options.cache_dir, install_requirements=options.install_requirements)
    state = WorkerState(store=store, watchdog=Watchdog(slots=options.threads),
                        worker_id=options.worker_id or f"{socket.gethostname()}-{os.getpid()}",
                        token=options.token, previous_exit=options.previous_exit or "")
    if options.metrics_port is not None:
        host = listen.rpartition(":")[0].strip("[]") if not listen.startswith("unix:") else "127.0.0.1"
        port = METRICS.serve(host or "0.0.0.0", options.metrics_port, state)
        print(f"turbolift worker metrics on http://{host or '0.0.0.0'}:{port}/metrics", file=sys.stderr,
              flush=True)
    interceptors = [TokenInterceptor(options.token)] if options.token else []
    pool = futures.ThreadPoolExecutor(max_workers=UNARY_THREADS, thread_name_prefix="turbolift-unary")
    # Each Session holds a thread for its life (its calls run in it); threads
    # are made on demand, and the handler refuses streams beyond its limits.
    sessions = SessionHandler(state, futures.ThreadPoolExecutor(
        max_workers=MAX_PENDING + MAX_SESSIONS, thread_name_prefix="turbolift-session"))
    server = grpc.server(pool, interceptors=interceptors, options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((_handlers(state, sessions),))
    health_service = health.HealthServicer()
    server.add_generic_rpc_handlers((_health_handlers(health_service),))
    try:
        if options.tls is not None:
            port = server.add_secure_port(listen, options.tls.server_credentials())
        else:
            port = server.add_insecure_port(listen)
        bound = port != 0 or listen.startswith("unix:")
    except RuntimeError:  # newer grpc raises when it cannot bind
        bound = False
    if not bound:
        raise ConfigurationError(f"could not listen on {listen}: is the address in use, or not an "
                                 "address of this host?")
    server.start()
    for name in ("", SERVICE_NAME):
        health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    address = listen if listen.startswith("unix:") else f"{listen.rsplit(':', 1)[0]}:{port}"
    return server, address


class _Launcher:
    """Whether the process that launched this worker is gone: ``stdin_closed`` once the pipe on stdin
    reached end-of-file (the caller stopped us, or died), ``gone`` also when our parent changed (the
    caller, or the template that forked us, ended)."""

    def __init__(self) -> None:
        self.stdin_closed = threading.Event()
        self.gone = threading.Event()
        parent = os.getppid()

        def on_stdin_closed() -> None:
            # The descriptor, not sys.stdin: a thread blocked inside a buffered read holds its lock,
            # which stops the interpreter's exit when the worker leaves with stdin still open.
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            self.stdin_closed.set()
            self.gone.set()

        def on_parent_changed() -> None:
            while not self.gone.wait(1.0):
                if os.getppid() != parent:
                    self.gone.set()

        threading.Thread(target=on_stdin_closed, daemon=True, name="turbolift-stdin").start()
        threading.Thread(target=on_parent_changed, daemon=True, name="turbolift-parent").start()


def run(options: WorkerOptions, *, ready_fd: Optional[int] = None, exit_with_stdin: bool = False,
        publish_token: bool = False) -> int:
    """Serve until stopped; return the exit status.

    ``ready_fd`` is the launcher's pipe, which receives the address once the
    server serves (otherwise the address is printed). With ``exit_with_stdin``
    the server stops when stdin closes or the parent process changes. With
    ``publish_token`` the token (made for this worker) is written where
    callers of this user find it, and removed at exit.
    """
    allocator.tune()
    server, address = serve(options)
    published = tokens.publish(address, options.token) if publish_token and options.token else None
    if published is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)  # unwind, so that the token file goes too
    launcher = _Launcher() if exit_with_stdin else None
    try:
        if ready_fd is not None:
            report_ready(ready_fd, address)
        else:
            print(f"turbolift worker listening on {address}", flush=True)
        if published is not None:
            print(tokens.announce(published), file=sys.stderr, flush=True)
        return _serve_until_stopped(server, launcher)
    finally:
        tokens.remove(published)
        if launcher is not None:
            _remove_run_files(address, directory_too=launcher.stdin_closed.is_set())


def _remove_run_files(address: str, directory_too: bool) -> None:
    """Remove this worker's unix socket and, if it was the last and ``directory_too``, its cluster's
    run directory.

    The caller removes both when it stops its cluster; when it was killed
    (SIGKILL), its workers, which exit when it is gone, clean up instead.
    The directory stays while the caller lives (its template was killed,
    say): it starts replacements there.
    """
    if not address.startswith("unix:"):
        return
    path = address[len("unix:"):]
    try:
        os.unlink(path)
    except OSError:   # (gRPC may have removed it already)
        pass
    directory = os.path.dirname(path)
    if directory_too and os.path.basename(directory).startswith(RUN_DIR_PREFIX):
        try:
            os.rmdir(directory)   # fails while another worker's socket is still there: that one removes it
        except OSError:
            pass


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve_until_stopped(server: grpc.Server, launcher: Optional[_Launcher]) -> int:
    if launcher is not None:
        try:
            launcher.gone.wait()
        except KeyboardInterrupt:
            pass
        server.stop(grace=0.5).wait()
        return 0
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1.0).wait()
    return 0
