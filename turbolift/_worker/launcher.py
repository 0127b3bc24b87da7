"""Starting ``turbolift worker`` processes and learning when they are ready.

Used by the local platform, by the supervisor of a hand-started worker and
(through the supervisor) by the command line. A worker is a fresh
interpreter, or the fork of a template that imported its modules but holds
no gRPC state (:mod:`.template`, :mod:`.forked`), never a fork of a process that does. It
reports the address it listens on through a pipe (``--ready-fd``) once it
serves, and with ``--exit-with-stdin`` it exits when the pipe on its stdin
closes, which happens however its parent ends (SIGKILL included).

This module imports no gRPC: ``import turbolift`` loads it.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import ClusterError
from .forked import Template
from .forked import available as can_fork_workers  # noqa: F401  (for the local platform)
from .template import worker_command

# Variables that would make a worker distribute its calls in turn.
_SWITCHES = ("TURBOLIFT", "TURBOLIFT_CLUSTER")
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent.parent)
# What a local cluster names the private directory of its workers' sockets
# (the last worker to exit removes it when the cluster's owner was killed).
RUN_DIR_PREFIX = "turbolift-run-"


def default_cache_dir() -> str:
    """Where bundles are cached: $TURBOLIFT_CACHE_DIR, else the user's cache directory."""
    explicit = os.environ.get("TURBOLIFT_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "turbolift")


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGSEGV' for a child's return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def report_ready(ready_fd: int, address: str) -> None:
    """In the worker: tell the launching process where it listens (if it still listens: a worker
    forked as its cluster stopped finds the pipe closed, and its stdin too, and leaves)."""
    try:
        os.write(ready_fd, (address + "\n").encode())
    except BrokenPipeError:
        pass
    finally:
        os.close(ready_fd)


class WorkerNotStarted(ClusterError):
    """A forked worker that its template will never fork (gone, or stopped answering)."""


def worker_env() -> dict:
    """The environment of a local worker: this process's, without the switches that would make it
    distribute its own calls, with turbolift importable."""
    env = {key: value for key, value in os.environ.items() if key not in _SWITCHES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    return env


class WorkerProcess:
    """One worker server process started by this process.

    ``args`` are the options of ``turbolift worker`` (``--listen`` among
    them); the launcher adds ``--no-restart``, ``--ready-fd`` and
    ``--exit-with-stdin``. A ``token`` is handed over on stdin (never on
    the command line or in the environment). ``name`` is how errors refer
    to the worker. With a ``template`` (:mod:`.template`) the worker is
    forked by it (``cwd`` and ``new_session`` are then the template's);
    otherwise it is a fresh interpreter.
    """

    def __init__(self, args: Sequence[str], *, name: str = "worker", token: Optional[str] = None,
                 cwd: Optional[str] = None, new_session: bool = False, template: Optional[Template] = None,
                 ) -> None:
        self.name = name
        ready_read, ready_write = os.pipe()
        options = [*args, "--no-restart", "--exit-with-stdin"]
        if token is not None:
            options.append("--token-stdin")
        try:
            if template is not None:
                self.process: Any = template.spawn(options, worker_env(), ready_write)
            else:
                command = worker_command([*options, "--ready-fd", str(ready_write)])
                self.process = subprocess.Popen(command, stdin=subprocess.PIPE, cwd=cwd, env=worker_env(),
                                                pass_fds=(ready_write,), start_new_session=new_session)
        finally:
            os.close(ready_write)
        self._ready_read: Optional[int] = ready_read
        self._forked = template is not None
        self._reading = threading.Lock()   # (the first calls of several threads wait together)
        if token is not None:
            assert self.process.stdin is not None
            self.process.stdin.write(token.encode() + b"\n")
            self.process.stdin.flush()
        self.address: Optional[str] = None

    @property
    def pid(self) -> Optional[int]:
        """The process id; None for a forked worker its template has not (or never) forked."""
        if self._forked and self.address is not None:
            return self.process.wait_pid(5.0)   # reported ready: it was forked, the answer is near
        return self.process.pid

    def wait_address(self, deadline: float) -> str:
        """Block until the worker reports its address; ClusterError if it exits or time runs out
        (:class:`WorkerNotStarted` for a forked one its template will not fork)."""
        with self._reading:
            if self.address is not None:
                return self.address
            assert self._ready_read is not None, "the worker was stopped before it reported its address"
            poller = select.poll()   # (not select: any descriptor number)
            poller.register(self._ready_read, select.POLLIN)
            data = b""
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterError(f"{self.name} did not start in time")
                if self._forked and self.process.abandoned():
                    raise WorkerNotStarted(f"{self.name} was not started: {self.exit_reason()}")
                if poller.poll(1000 * min(remaining, 0.25)):
                    chunk = os.read(self._ready_read, 1024)
                    if not chunk:
                        # The pipe closes as the process exits: wait a moment for its status.
                        ended = self.exit_reason(timeout=5.0) or "closed its pipe"
                        if self._forked and self.process.pid is None:
                            raise WorkerNotStarted(f"{self.name} was not started: {ended}")
                        raise ClusterError(f"{self.name} exited during start-up ({ended}); its error "
                                           "output is above")
                    data += chunk
            self._close_ready()
            self.address = data.decode().strip()
            return self.address

    def exit_reason(self, timeout: float = 0.0) -> Optional[str]:
        """How the process ended ('killed by SIGKILL'), waiting up to ``timeout``; None while it runs."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return getattr(self.process, "exit_description", None) or describe_exit(code)

    def signal_stop(self) -> None:
        """Ask the worker to exit now, without waiting for it."""
        process = self.process
        if process.stdin is not None:
            try:
                process.stdin.close()  # the cue a worker also gets if we die
            except OSError:
                pass
        if process.poll() is None:
            process.terminate()  # nobody awaits its calls any more: no graceful drain
        self._close_ready()

    def stop(self, grace: float) -> None:
        """Stop the worker, killing it if it has not exited after ``grace`` seconds."""
        self.signal_stop()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _close_ready(self) -> None:
        if self._ready_read is not None:
            try:
                os.close(self._ready_read)
            except OSError:
                pass
            self._ready_read = None
