"""Keep a hand-started worker serving when user code kills its process.

``turbolift worker`` runs the gRPC server in a child process and restarts
it, on the same address, whenever it dies: a function that calls
``os._exit`` or crashes in native code takes down one server process, not
the worker. Calls that were running in the dead process fail with
UNAVAILABLE in their callers, which retry them elsewhere or report
:class:`~turbolift.errors.WorkerLost`. (Local clusters restart their
workers themselves and do not use this.)
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

RESTART_WINDOW = 10.0        # seconds
RESTARTS_BEFORE_BACKOFF = 5  # within the window, then wait a second between restarts


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGSEGV' for a child's return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _start(args: Sequence[str], listen: str, previous_exit: Optional[str]) -> tuple[subprocess.Popen, int]:
    ready_read, ready_write = os.pipe()
    command = [sys.executable, "-m", "turbolift", "worker", *args, "--listen", listen, "--no-restart",
               "--ready-fd", str(ready_write), "--exit-with-stdin"]
    if previous_exit:
        command += ["--previous-exit", previous_exit]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(ready_write,))
    os.close(ready_write)
    return child, ready_read


def _read_address(child: subprocess.Popen, ready_read: int) -> Optional[str]:
    data = b""
    try:
        while not data.endswith(b"\n"):
            readable, _, _ = select.select([ready_read], [], [], 60)
            if not readable:
                return None
            chunk = os.read(ready_read, 1024)
            if not chunk:
                return None
            data += chunk
    finally:
        os.close(ready_read)
    return data.decode().strip()


def supervise(args: Sequence[str], listen: str) -> int:
    """Run and re-run the worker server; return when told to stop."""
    stopping = False
    child: Optional[subprocess.Popen] = None

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts: list[float] = []
    previous_exit: Optional[str] = None
    address = listen
    first = True
    while True:
        child, ready_read = _start(args, address, previous_exit)
        found = _read_address(child, ready_read)
        if found is None:
            code = child.wait()
            if first or stopping:
                return code or 1
        else:
            if first:
                address = found  # a port 0 request is now a fixed port for restarts
                print(f"turbolift worker listening on {address}", flush=True)
                first = False
            code = child.wait()
        if stopping:
            return 0
        previous_exit = describe_exit(code)
        print(f"turbolift worker: the server process died ({previous_exit}), most likely in user code; "
              "restarting it", file=sys.stderr, flush=True)
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
        if len(restarts) > RESTARTS_BEFORE_BACKOFF:
            time.sleep(1.0)
