"""Child process of section 7: one plain-RPC peer, measured in isolation.

``python -m benchmarks.rpc_peers PEER PARAMS.json`` sets up PEER, runs
``workloads.add(1, 2)`` through it and prints one JSON line of raw samples.
The peers are what users pick for plain remote calls:

* ``execnet``: a gateway to a ``popen`` Python child; a call is
  ``channel.send((1, 2))`` then ``channel.receive()`` (the child loops over
  its channel, over the popen pipes);
* ``rpyc``: a ``ThreadedServer`` of a service exposing ``add``, in a child
  process, on a unix socket; a call is ``conn.root.add(1, 2)``;
* ``pyro5``: a ``Daemon`` on 127.0.0.1 (TCP) in a child process with one
  exposed object; a call is ``proxy.add(1, 2)``;
* ``process_pool``: ``ProcessPoolExecutor(workers)`` (spawn, as section 3);
  a call is ``submit(add, 1, 2).result()``;
* ``loky``: ``loky.get_reusable_executor(max_workers=workers)``, the same.

Figures (raw): ``start_s`` / ``stop_s``: setting the peer up (server or
pool started, connected, one call) and tearing it down; ``seq``: seconds
of each sequential round trip, after 20 discarded warm-up calls; for the
two pools, ``in_flight``: ``[calls, seconds]`` per repetition of a
sliding window of ``in_flight`` outstanding ``submit`` futures (as
section 2 does for turbolift) and ``latency``: each of those calls'
seconds from submit to completion. Every loop is bounded by its count and
by ``budget`` seconds. Servers run as ``python -m benchmarks.rpc_peers
serve-rpyc|serve-pyro5 ADDRESS``, print their address and exit when their
stdin closes.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterator, NamedTuple, Optional

from . import workloads
from .measure import Budget, time_calls, windowed

EXECNET_SOURCE = """
from benchmarks.workloads import add
for a, b in channel:
    channel.send(add(a, b))
"""


class Peer(NamedTuple):
    call: Callable[[], object]                 # one sequential round trip of add(1, 2)
    submit: Optional[Callable[[], object]]     # a future of add(1, 2), where the peer has them
    version: str


# -- the servers (each in a child process of the runner) ------------------------------

def _wait_for_stdin_eof() -> None:
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except (OSError, ValueError, KeyboardInterrupt):
        pass


def serve_rpyc(path: str) -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class AddService(rpyc.Service):
        def exposed_add(self, a, b):
            return workloads.add(a, b)

    server = ThreadedServer(AddService, socket_path=path, logger=_quiet_logger())
    threading.Thread(target=server.start, daemon=True).start()
    print(path, flush=True)
    _wait_for_stdin_eof()
    server.close()


def serve_pyro5(host: str) -> None:
    import Pyro5.api

    @Pyro5.api.expose
    class Adder:
        def add(self, a, b):
            return workloads.add(a, b)

    daemon = Pyro5.api.Daemon(host=host, port=0)
    uri = daemon.register(Adder(), "adder")
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    print(uri, flush=True)
    _wait_for_stdin_eof()
    daemon.shutdown()


def _quiet_logger():
    import logging

    logger = logging.getLogger("bench.rpyc")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


@contextlib.contextmanager
def _server(kind: str, address: str) -> Iterator[str]:
    """A server child process of ``kind``; yields the address it printed."""
    from .servers import read_address, stop

    process = subprocess.Popen([sys.executable, "-m", "benchmarks.rpc_peers", f"serve-{kind}", address],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ))
    try:
        yield read_address(process, 30)
    finally:
        stop([process])


# -- the clients ----------------------------------------------------------------------

@contextlib.contextmanager
def _execnet(params: dict) -> Iterator[Peer]:
    import execnet

    gateway = execnet.makegateway(f"popen//python={sys.executable}")
    try:
        channel = gateway.remote_exec(EXECNET_SOURCE)

        def call():
            channel.send((1, 2))
            return channel.receive()
        yield Peer(call, None, execnet.__version__)
        channel.close()
    finally:
        gateway.exit()


@contextlib.contextmanager
def _rpyc(params: dict) -> Iterator[Peer]:
    import rpyc

    with tempfile.TemporaryDirectory(prefix="bench-rpyc-") as folder:
        with _server("rpyc", os.path.join(folder, "rpyc.sock")) as path:
            conn = rpyc.utils.factory.unix_connect(path)
            try:
                yield Peer(lambda: conn.root.add(1, 2), None, rpyc.__version__)
            finally:
                conn.close()


@contextlib.contextmanager
def _pyro5(params: dict) -> Iterator[Peer]:
    import Pyro5
    import Pyro5.api

    with _server("pyro5", "127.0.0.1") as uri:
        with Pyro5.api.Proxy(uri) as proxy:
            yield Peer(lambda: proxy.add(1, 2), None, Pyro5.__version__)


def _pool_peer(pool, version: str) -> Peer:
    list(pool.map(workloads.inc, range(8 * 4)))  # start and warm every process

    def submit():
        return pool.submit(workloads.add, 1, 2)
    return Peer(lambda: submit().result(), submit, version)


@contextlib.contextmanager
def _process_pool(params: dict) -> Iterator[Peer]:
    import concurrent.futures
    import multiprocessing
    import platform

    spawn = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(params["workers"], mp_context=spawn)
    try:
        yield _pool_peer(pool, f"stdlib (Python {platform.python_version()})")
    finally:
        pool.shutdown()


@contextlib.contextmanager
def _loky(params: dict) -> Iterator[Peer]:
    import loky

    pool = loky.get_reusable_executor(max_workers=params["workers"])
    try:
        yield _pool_peer(pool, loky.__version__)
    finally:
        pool.shutdown(wait=True)


PEERS = {"execnet": _execnet, "rpyc": _rpyc, "pyro5": _pyro5, "process_pool": _process_pool, "loky": _loky}


def measure(peer: str, params: dict) -> dict:
    budget = Budget(params["budget"])
    out: dict = {"in_flight": [], "latency": []}
    began = time.perf_counter()
    with PEERS[peer](params) as handle:
        if handle.call() != 3:
            raise RuntimeError(f"{peer} returned a wrong result for add(1, 2)")
        out["start_s"] = time.perf_counter() - began
        for _ in range(20):
            handle.call()
        out["seq"] = time_calls(handle.call, params["seq_calls"], budget)
        if handle.submit is not None:
            windowed(handle.submit, min(200, params["tasks"]), params["in_flight"], budget)  # warm-up
            for _ in range(params["reps"]):
                if out["in_flight"] and budget.expired():
                    break
                sent, seconds, latencies = windowed(handle.submit, params["tasks"], params["in_flight"],
                                                    budget)
                out["in_flight"].append([sent, seconds])
                out["latency"].extend(latencies)
            if handle.submit().result(timeout=60) != 3:
                raise RuntimeError(f"{peer} submit returned a wrong result for add(1, 2)")
        out["version"] = handle.version
        began = time.perf_counter()
    out["stop_s"] = time.perf_counter() - began
    return out


def main(argv: list) -> int:
    command, argument = argv[:2]
    if command == "serve-rpyc":
        serve_rpyc(argument)
    elif command == "serve-pyro5":
        serve_pyro5(argument)
    else:
        with open(argument) as handle:
            params = json.load(handle)
        print(json.dumps(measure(command, params)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
