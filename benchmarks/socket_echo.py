"""The physical limit of a round trip: bare socket ping-pong, no gRPC, no HTTP/2.

Run as ``python -m benchmarks.socket_echo --listen unix:PATH`` (or
``127.0.0.1:0``), it accepts connections and sends back whatever bytes
arrive, one blocking ``recv`` then one ``sendall`` per message, a thread
per connection; it prints its address on stdout and exits when its stdin
closes (so it never outlives the suite). There is no framing: the client
knows how many bytes it sent and reads until it has them all back, so one
round trip is one write and one read on each side, the least any RPC over
that socket can cost.

:class:`SocketEchoServers` starts ``count`` of them (as many as turbolift
has workers) on the transport turbolift's local workers use, and makes
calls rotating over them, as the grpcio baseline does.
"""
from __future__ import annotations

import argparse
import itertools
import socket
import threading
from typing import Callable, Optional

from .baseline_server import child_env
from .servers import ServerProcesses, serve_until_stdin_closes


def _connect_socket(address: str) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address[len("unix:"):])
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _echo(conn: socket.socket) -> None:
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


def serve(listen: str) -> None:
    if listen.startswith("unix:"):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(listen[len("unix:"):])
        address = listen
    else:
        host, port = listen.rsplit(":", 1)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((host, int(port)))
        address = f"{host}:{listener.getsockname()[1]}"
    listener.listen(16)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            if conn.family == socket.AF_INET:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    serve_until_stdin_closes(address)
    listener.close()


class SocketEchoServers:
    """``count`` socket echo server processes and one connected socket to each."""

    def __init__(self, count: int = 2, transport: str = "unix", start_timeout: float = 30.0) -> None:
        self.transport = transport
        self.sockets: list = []
        self._servers = ServerProcesses("benchmarks.socket_echo", count, transport, "socket-echo",
                                        child_env(), start_timeout=start_timeout)
        try:
            for address in self._servers.addresses:
                self.sockets.append(_connect_socket(address))
        except BaseException:
            self.close()
            raise

    def caller(self, request: bytes) -> Callable[[], bytes]:
        """A zero-argument function: send ``request``, read as many bytes back; rotating over the servers."""
        turn = itertools.cycle(self.sockets)
        size = len(request)

        def call() -> bytes:
            sock = next(turn)
            sock.sendall(request)
            got = sock.recv(65536)
            while len(got) < size:
                more = sock.recv(65536)
                if not more:
                    raise ConnectionError("the socket echo server closed the connection")
                got += more
            return got
        return call

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        self._servers.close()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.socket_echo")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT or unix:PATH")
    serve(parser.parse_args(argv).listen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
