"""Keep a hand-started worker serving when user code kills its process.

``turbolift worker`` runs the gRPC server in a child process and restarts
it, on the same address, whenever it dies: a function that calls
``os._exit`` or crashes in native code takes down one server process, not
the worker. Calls that were running in the dead process fail with
UNAVAILABLE in their callers, which retry them elsewhere or report
:class:`~turbolift.errors.WorkerLost`. (Local clusters replace their
workers themselves and do not use this.)
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .._wire.auth import token_directory
from ..errors import ClusterError
from . import tokens
from .launcher import WorkerProcess

RESTART_WINDOW = 10.0        # seconds
RESTARTS_BEFORE_BACKOFF = 5  # within the window, then wait a second between restarts
START_TIMEOUT = 60.0


def supervise(args: Sequence[str], listen: str, make_token: bool = False) -> int:
    """Run and re-run the worker server with ``args`` on ``listen``; return the exit status.

    The first start must succeed (its error is the worker's); later ones
    reuse the address the first one got (a port 0 request becomes a fixed
    port), and the token: with ``make_token`` the supervisor makes one, which
    every server process it starts requires, and publishes it for the callers
    of its user once the address is known (removing it when it stops).
    SIGTERM and SIGINT stop the server and the supervisor.
    """
    if not make_token:
        return _supervise(args, listen, None)
    token = tokens.new_token()
    pending = tokens.write(token_directory() / f"pending-{os.getpid()}.token", token)
    try:
        return _supervise(args, listen, (pending, token))
    finally:
        tokens.remove(pending)


def _supervise(args: Sequence[str], listen: str, made: Optional[tuple[Path, str]]) -> int:
    stopping = False
    child: Optional[WorkerProcess] = None

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.process.poll() is None:
            child.process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts: list[float] = []
    previous_exit: Optional[str] = None
    address = listen
    token_args = ["--token-file", str(made[0])] if made else []
    published: Optional[Path] = None
    started = False
    try:
        while True:
            extra = ["--previous-exit", previous_exit] if previous_exit else []
            child = WorkerProcess([*args, "--listen", address, *token_args, *extra], name="the worker server")
            try:
                found = child.wait_address(time.monotonic() + START_TIMEOUT)
            except ClusterError:
                found = None
            first = not started
            if found is None:
                code = child.process.wait()
                if first or stopping:
                    return code or 1
            else:
                if first:
                    started = True
                    address = found  # a port 0 request is now a fixed port for restarts
                    if made is not None:   # before the address is announced: callers look for it then
                        published = tokens.publish(address, made[1])
                        token_args = ["--token-file", str(published)]
                    print(f"turbolift worker listening on {address}", flush=True)
                    if published is not None:
                        print(tokens.announce(published), file=sys.stderr, flush=True)
                code = child.process.wait()
            if stopping:
                return 0
            previous_exit = child.exit_reason()
            print(f"turbolift worker: the server process died ({previous_exit}), most likely in user code; "
                  "restarting it", file=sys.stderr, flush=True)
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
            if len(restarts) > RESTARTS_BEFORE_BACKOFF:
                time.sleep(1.0)
    finally:
        tokens.remove(published)
