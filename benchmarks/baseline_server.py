"""The baseline: a bare grpcio server, and the handle the suite drives it with.

Run as ``python -m benchmarks.baseline_server``, it serves on 127.0.0.1 at an
ephemeral port, prints the port on stdout, and exits when its stdin
closes (so it never outlives the suite). It is what turbolift would be
without turbolift: one generic handler (``grpc.method_handlers_generic_handler``)
whose (de)serialisers are the identity, so request and reply bytes pass
through untouched, on a sync ``grpc.server`` with 16 threads and the same
message-size limits as a turbolift worker. Methods of ``bench.Baseline``:

* ``Echo``: returns the request bytes (the raw gRPC limit for a call that
  carries exactly the bytes turbolift sends);
* ``EchoStream``: a bidirectional stream that sends back each request
  message as it arrives (one long-lived stream, one reply per message:
  the transport's stream form, as turbolift's Session uses it);
* ``Call_<fn>`` ("dill-echo"): unpickles ``(args, kwargs)``, runs
  ``workloads.<fn>``, pickles the result, with turbolift's own serialiser
  (``turbolift._wire.serialize``: the C pickler, dill for what it cannot carry);
  the least work any worker must do for the call;
* ``Batch_<fn>``: the same for a pickled tuple of the arguments of
  one-argument calls, replying the list of results (the leanest encoding of a
  batch: a turbolift worker's, for ``map`` over one iterable, adds only
  an empty dict of errors);
* ``Sink``: receives bytes, returns their length (upload limit);
* ``Source``: receives a size, returns the pickled ``workloads.payload(size)``
  (download limit; built once, then only sent); ``Prepare`` builds it
  ahead of timing, ``Release`` frees it.
"""
from __future__ import annotations

import argparse
import itertools
import os
import threading
from concurrent import futures
from typing import Any, Callable, Optional

from .servers import REPO, ServerProcesses, serve_until_stdin_closes

SERVICE = "bench.Baseline"
MESSAGE_LIMIT = 2**31 - 1
MESSAGE_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
]
WORKLOAD_NAMES = ("noop", "add", "inc", "burn", "size_of")


# -- the server (runs in its own fresh process) ---------------------------------------

def _handlers() -> dict:
    import grpc

    from turbolift._wire import serialize as _serialize

    from . import workloads

    def unary(behaviour: Callable[[bytes], bytes]) -> Any:
        # No (de)serialiser: grpcio hands the handler the request bytes as they
        # arrived and sends the returned bytes as they are (the identity).
        return grpc.unary_unary_rpc_method_handler(lambda request, context: behaviour(request))

    def call(fn: Callable) -> Callable[[bytes], bytes]:
        def run(request: bytes) -> bytes:
            args, kwargs = _serialize.loads(request)
            return _serialize.dumps(fn(*args, **kwargs), for_worker=False)
        return run

    def batch(fn: Callable) -> Callable[[bytes], bytes]:
        def run(request: bytes) -> bytes:
            return _serialize.dumps(list(map(fn, _serialize.loads(request))), for_worker=False)
        return run

    sources: dict = {}

    def source(request: bytes) -> bytes:
        size = int(request)
        if size not in sources:
            sources.clear()
            # Only the pickled bytes are kept (1x the payload), as a turbolift
            # worker keeps only the payload object its function returns.
            sources[size] = _serialize.dumps(workloads.make_payload(size), for_worker=False)
        return sources[size]

    def prepare(request: bytes) -> bytes:
        source(request)
        return b""

    def release(request: bytes) -> bytes:
        sources.clear()
        workloads.release_payloads()
        return b""

    handlers = {
        "Echo": unary(lambda request: request),
        # The handler's iterator of replies is its iterator of requests: each message back as it came.
        "EchoStream": grpc.stream_stream_rpc_method_handler(lambda requests, context: requests),
        "Prepare": unary(prepare),
        "Release": unary(release),
        "Sink": unary(lambda request: str(len(request)).encode()),
        "Source": unary(source),
    }
    for name in WORKLOAD_NAMES:
        fn = getattr(workloads, name)
        handlers[f"Call_{name}"] = unary(call(fn))
        handlers[f"Batch_{name}"] = unary(batch(fn))
    return handlers


def serve(threads: int, listen: str = "127.0.0.1:0") -> None:
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                         options=[*MESSAGE_OPTIONS, ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, _handlers()),))
    port = server.add_insecure_port(listen)
    if not port:
        raise SystemExit(f"baseline server: could not bind {listen}")
    server.start()
    address = listen if listen.startswith("unix:") else f"{listen.rsplit(':', 1)[0]}:{port}"
    serve_until_stdin_closes(address)
    server.stop(grace=0.2).wait()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_server")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT or unix:PATH")
    opts = parser.parse_args(argv)
    serve(opts.threads, opts.listen)
    return 0


# -- the handle the suite uses ------------------------------------------------------

def child_env() -> dict:
    """Environment for the suite's child processes: this repository importable first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for name in ("TURBOLIFT", "TURBOLIFT_CLUSTER"):
        env.pop(name, None)
    return env


class BaselineServers:
    """``count`` baseline server processes and one reused channel to each.

    Calls rotate over the servers, as turbolift's calls spread over its
    workers, so both sides have the same number of server processes.
    ``transport`` is the one turbolift's local workers use ("unix" sockets
    in a private directory, or "tcp" on loopback), so that both sides of a
    comparison cross the same kind of socket.
    """

    def __init__(self, count: int = 2, threads: int = 16, start_timeout: float = 30.0,
                 transport: str = "tcp") -> None:
        import grpc

        self.transport = transport
        self.channels: list = []
        self._servers = ServerProcesses("benchmarks.baseline_server", count, transport, "baseline",
                                        child_env(), ("--threads", str(threads)), start_timeout)
        self.addresses = self._servers.addresses   # one per server, as grpc targets (unix:PATH, HOST:PORT)
        try:
            for address in self.addresses:
                channel = grpc.insecure_channel(address, options=MESSAGE_OPTIONS)
                self.channels.append(channel)
                grpc.channel_ready_future(channel).result(timeout=start_timeout)
        except BaseException:
            self.close()
            raise
        self._methods: dict = {}
        self._turns: dict = {}
        self._lock = threading.Lock()

    @property
    def pids(self) -> list:
        return self._servers.pids

    def method(self, name: str) -> list:
        """One raw multicallable per server for ``bench.Baseline/<name>`` (bytes in, bytes out)."""
        found = self._methods.get(name)
        if found is None:
            found = [channel.unary_unary(f"/{SERVICE}/{name}") for channel in self.channels]
            self._methods[name] = found
        return found

    def caller(self, name: str, request: bytes, timeout: float = 60.0) -> Callable[[], bytes]:
        """A zero-argument function making one blocking call, rotating over the servers."""
        turn = itertools.cycle(self.method(name))

        def call() -> bytes:
            return next(turn)(request, timeout=timeout)
        return call

    def next_method(self, name: str) -> Any:
        """The multicallable of the next server in turn (for futures)."""
        with self._lock:
            turn = self._turns.get(name)
            if turn is None:
                turn = self._turns[name] = itertools.cycle(self.method(name))
            return next(turn)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels = []
        self._servers.close()

    def __enter__(self) -> "BaselineServers":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


if __name__ == "__main__":
    raise SystemExit(main())
