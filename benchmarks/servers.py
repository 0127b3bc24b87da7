"""Baseline server processes: started, found, stopped, the same way for every baseline.

A baseline server is a child ``python -m MODULE ... --listen ADDRESS`` that
prints its address on stdout once it serves and exits when its stdin
closes (so it never outlives the suite). :class:`ServerProcesses` starts
``count`` of them on the transport turbolift's local workers use (unix
sockets in a private directory, or TCP on loopback);
:func:`read_address` and :func:`stop` serve a single one too.
"""
from __future__ import annotations

import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent


def serve_until_stdin_closes(address: str) -> None:
    """In a baseline server, once it serves: report ``address`` to the parent (see
    :func:`read_address`), then block until the parent closes our stdin, or dies."""
    print(address, flush=True)
    try:
        while sys.stdin.buffer.read(65536):  # our parent holds the other end
            pass
    except (OSError, ValueError, KeyboardInterrupt):
        pass


def read_address(process: subprocess.Popen, timeout: float) -> str:
    """The address ``process`` printed once serving; RuntimeError if it printed none in ``timeout``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode().strip() if ready else ""
    if not line:
        raise RuntimeError(f"baseline server pid {process.pid} did not report its address "
                           f"(exit code {process.poll()})")
    return line


def stop(processes: Iterable[subprocess.Popen], grace: float = 5.0) -> None:
    """Close every server's stdin (all at once, so they exit in parallel), then reap each, killing one
    still there after ``grace`` seconds."""
    processes = list(processes)
    for process in processes:
        if process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


class ServerProcesses:
    """``count`` servers of ``module`` (``python -m MODULE *ARGS --listen ADDRESS``), their addresses
    in ``addresses``; ``name`` names their sockets and their private directory."""

    def __init__(self, module: str, count: int, transport: str, name: str, env: dict,
                 args: Sequence[str] = (), start_timeout: float = 30.0) -> None:
        self.processes: list = []
        self.addresses: list = []
        self._socket_dir: Optional[str] = tempfile.mkdtemp(prefix=f"bench-{name}-") if transport == "unix" \
            else None
        try:
            for index in range(count):
                listen = f"unix:{self._socket_dir}/{name}-{index}.sock" if self._socket_dir else "127.0.0.1:0"
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", module, *args, "--listen", listen],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(REPO), env=env))
            self.addresses = [read_address(process, start_timeout) for process in self.processes]
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list:
        return [process.pid for process in self.processes]

    def close(self) -> None:
        stop(self.processes)
        self.processes = []
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
