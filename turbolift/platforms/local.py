"""Worker processes on this machine: the default platform (``local``, ``local:N``)."""
from __future__ import annotations

import glob
import itertools
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from typing import Optional

from .._worker.launcher import (
    RUN_DIR_PREFIX,
    Template,
    WorkerNotStarted,
    WorkerProcess,
    can_fork_workers,
    default_cache_dir,
    worker_env,
)
from ..errors import ConfigurationError
from .base import Cluster


def process_is_running(pid: int) -> bool:
    """True when a thread of ``pid`` is on a CPU or waiting for one ("R"), or in uninterruptible I/O
    such as page faults ("D"); not when all sleep, or it is stopped (SIGSTOP) or gone. Linux /proc
    (False elsewhere)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/stat") as handle:
                state = handle.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("R", "D"):
            return True
    return False


def running_local_workers() -> list[str]:
    """The addresses of the unix-socket workers of this user's running LocalQueues (each keeps its
    sockets in a private run directory of the temporary directory)."""
    found = []
    for run_dir in sorted(glob.glob(os.path.join(tempfile.gettempdir(), RUN_DIR_PREFIX + "*"))):
        try:
            if os.stat(run_dir).st_uid != os.getuid():
                continue
        except OSError:
            continue
        found += ["unix:" + path for path in sorted(glob.glob(os.path.join(run_dir, "*.sock")))]
    return found


class LocalQueue(Cluster):
    """Worker processes on this machine.

    Workers are forked by one template process that imported their modules
    once and holds no gRPC state (on Linux; see ``turbolift._worker.template``),
    or are fresh interpreters where it cannot run or once it was killed. Never
    are they forks of a process holding gRPC state. They are tied to this
    process: they exit when it exits, however it exits, SIGKILL included
    (each worker watches a pipe from this process and leaves at end-of-file).

    ``transport="unix"`` (the default where available): each worker listens
    on a unix socket inside a private directory (mode 0700) of this run, so
    the file system keeps every other user out and calls need no token.
    ``transport="tcp"``: ephemeral loopback ports, protected by a random
    per-run token that each call carries. ``start_timeout`` is how long
    callers wait for the workers to start.
    """

    def __init__(self, workers: Optional[int] = None, *, cache_dir: Optional[str] = None,
                 start_timeout: float = 60.0, transport: Optional[str] = None) -> None:
        super().__init__()
        if workers is not None and workers < 1:
            raise ConfigurationError(f"LocalQueue needs at least one worker, got {workers}")
        transport = transport or ("unix" if hasattr(socket, "AF_UNIX") else "tcp")
        if transport not in ("unix", "tcp"):
            raise ConfigurationError(f"LocalQueue transport must be 'unix' or 'tcp', not {transport!r}")
        self.workers = workers or os.cpu_count() or 1
        self.cache_dir = cache_dir or default_cache_dir()
        self.ready_timeout = start_timeout
        self.transport = transport
        self.token = secrets.token_urlsafe(32) if transport == "tcp" else None
        self._spawned = itertools.count()
        self._lock = threading.Lock()
        self._procs: list[WorkerProcess] = []
        self._retired: list[WorkerProcess] = []   # replaced after dying; kept for exit_reason
        self._former: dict[str, int] = {}         # address of a replaced worker -> its slot
        self._run_dir: Optional[str] = None
        self._workdir: Optional[str] = None       # the program's working directory: calls run there
        self._template: Optional[Template] = None
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._procs or self._stopped:
                return
            self._run_dir = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX)
            try:   # where calls run: the program's working directory as the cluster starts
                self._workdir = os.getcwd()
            except OSError:   # (deleted under it)
                self._workdir = None
            if can_fork_workers():
                # A neutral cwd: the project must reach the worker only as bundles.
                self._template = Template(worker_env(), cwd=self._run_dir)
            self._procs = [self._spawn(i) for i in range(self.workers)]

    def _spawn(self, index: int, forked: bool = True) -> WorkerProcess:
        assert self._run_dir is not None
        if self.transport == "unix":  # a fresh path for a replacement, too
            listen = f"unix:{self._run_dir}/worker-{index}-{next(self._spawned)}.sock"
        else:
            listen = "127.0.0.1:0"
        args = ["--listen", listen, "--cache-dir", self.cache_dir, "--worker-id", f"local-{index}"]
        if self._workdir is not None:
            args += ["--workdir", self._workdir]
        # Forked by the template while it serves; a fresh interpreter otherwise (it was killed).
        # A neutral cwd: the project must reach the worker only as bundles.
        # A new session: Ctrl-C in the terminal is the caller's to handle.
        template = self._template
        forker = template if forked and template is not None and template.serving else None
        return WorkerProcess(args, name=f"local worker {index}", token=self.token, cwd=self._run_dir,
                             new_session=True, template=forker)

    def wait_ready(self, timeout: float) -> list[str]:
        self.start()
        deadline = time.monotonic() + timeout
        return [self._address(proc, deadline) for proc in list(self._procs)]

    def _address(self, proc: WorkerProcess, deadline: float) -> str:
        """``proc``'s address; a worker its template will not fork (the template was killed, or
        stopped answering) is started afresh in its slot, once."""
        try:
            return proc.wait_address(deadline)
        except WorkerNotStarted:
            with self._lock:
                if self._stopped:
                    raise
                slot = next((i for i, current in enumerate(self._procs) if current is proc), None)
                if slot is None:
                    raise
                proc.signal_stop()   # (closes its pipes)
                self._retired.append(proc)
                fresh = self._procs[slot] = self._spawn(slot, forked=False)
            return fresh.wait_address(deadline)

    def replace(self, address: str, timeout: float) -> Optional[str]:
        """A live worker in the slot that ``address`` had: a new one when the slot's worker is dead,
        the slot's replacement when it already has one (a recovery that failed half-way, say
        because the replacement was killed during its start-up, must not leave the slot empty)."""
        with self._lock:
            if self._stopped:
                return None
            slot = next((i for i, proc in enumerate(self._procs) if proc.address == address),
                        self._former.get(address))
            if slot is None:
                return None
            current = self._procs[slot]
            waited = 2.0 if current.address == address else 0.0   # a killed process may take a moment
            if current.exit_reason(waited) is None:
                if current.address == address:
                    return None  # still alive: the connection failed, not the worker
                fresh = current   # the slot's replacement is alive: use it
            else:
                current.stop(0)
                self._retired.append(current)
                if current.address is not None:
                    self._former[current.address] = slot
                self._former[address] = slot
                fresh = self._procs[slot] = self._spawn(slot)
        return self._address(fresh, time.monotonic() + timeout)

    def busy_in_native_code(self, address: str) -> bool:
        for proc in list(self._procs):
            if proc.address == address:
                pid = proc.pid
                return pid is not None and process_is_running(pid)
        return False

    def exit_reason(self, address: str, timeout: float = 0.0) -> Optional[str]:
        for proc in list(self._procs) + list(self._retired):
            if proc.address == address:
                return proc.exit_reason(timeout)
        return None

    def local_pids(self) -> list[int]:
        return [pid for pid in (proc.pid for proc in self._procs) if pid is not None]

    pids = local_pids  # the name it had first

    @property
    def start_timeout(self) -> float:
        """How long callers wait for the workers to start (the ``ready_timeout`` of the interface)."""
        return self.ready_timeout

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            procs, self._procs = self._procs, []
            forker, self._template = self._template, None
        for proc in procs:  # all at once: they exit in parallel
            proc.signal_stop()
        if forker is not None and forker.starting:
            forker.close()   # still importing, or forking: nothing it has yet needs waiting for
        for proc in procs:
            proc.stop(grace=2.0)
        if forker is not None:
            forker.close()
        if self._run_dir:
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"LocalQueue(workers={self.workers}, transport={self.transport!r})"
