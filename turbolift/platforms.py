"""Where workers come from.

A platform is a :class:`Cluster`: it brings workers up, says where they are
and takes them down. Adding a platform touches no other part of turbolift.
This module must stay importable without gRPC (local mode imports it).
"""
from __future__ import annotations

import abc
import itertools
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from .errors import ClusterError, ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from ._tls import TLS


class Cluster(abc.ABC):
    """The platform interface.

    ``start`` may return before workers are ready; ``wait_ready`` blocks
    until they are (never by sleeping a fixed time) and returns their
    addresses; ``stop`` is idempotent and must leave no worker behind.
    ``token`` is what callers must present, or None.
    """

    token: Optional[str] = None
    tls: Optional["TLS"] = None   # how to reach the workers over TLS, or None for plaintext
    ready_timeout: float = 60.0   # how long callers wait for workers to become healthy

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def wait_ready(self, timeout: float) -> list[str]: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def replace(self, address: str, timeout: float) -> Optional[str]:
        """Bring up a substitute for a worker that died; None if not possible."""
        return None

    def exit_reason(self, address: str, timeout: float = 0.0) -> Optional[str]:
        """How the worker at ``address`` ended ("killed by SIGSEGV"), if known."""
        return None

    def subscribe(self, callback: Callable[[list[str]], None]) -> None:
        """Register ``callback`` to receive the full address list whenever it changes.

        Platforms whose workers come and go on their own (pods of a
        Kubernetes Deployment) call it from any thread; the dispatcher then
        opens channels to new addresses and closes those that went away.
        The default platform never changes its addresses by itself.
        """
        self._subscribers = [*getattr(self, "_subscribers", []), callback]

    def _publish(self, addresses: list[str]) -> None:
        """For platforms: tell subscribers about a new address list."""
        for callback in getattr(self, "_subscribers", []):
            callback(list(addresses))

    def __enter__(self) -> "Cluster":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _read_token(token: Optional[str], token_file: Optional[str]) -> Optional[str]:
    if token is not None:
        return token
    path = token_file or os.environ.get("TURBOLIFT_TOKEN_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the token file {path!r}: {exc}") from exc


class Workers(Cluster):
    """Workers started by hand (``turbolift worker``) at known addresses.

    ``Workers("h1:50051", "h2:50051", token_file="t")``; the URL form is
    ``grpc://h1:50051,h2:50051?token_file=t``. Over TLS:
    ``Workers(..., tls=TLS(ca="ca.pem"))`` or ``grpcs://h1:50051?ca=ca.pem``,
    adding ``cert=`` and ``key=`` for mutual TLS.
    """

    def __init__(self, *addresses: str, token: Optional[str] = None,
                 token_file: Optional[str] = None, tls: Optional["TLS"] = None,
                 ready_timeout: float = 10.0) -> None:
        if not addresses:
            raise ConfigurationError("Workers() needs at least one address such as 'host:50051'")
        for address in addresses:
            if not address.startswith("unix:") and ":" not in address:
                raise ConfigurationError(f"worker address {address!r} has no port; write it as host:port")
        self.addresses = list(addresses)
        self.token = _read_token(token, token_file)
        self.tls = tls
        self.ready_timeout = ready_timeout  # started by hand: they should be up already

    def start(self) -> None:
        pass

    def wait_ready(self, timeout: float) -> list[str]:
        return list(self.addresses)

    def stop(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"Workers({', '.join(map(repr, self.addresses))})"


class _LocalWorker:
    """One worker subprocess and the pipe that ties its life to ours."""

    def __init__(self, index: int, cache_dir: str, token: Optional[str], run_dir: str, listen: str) -> None:
        self.index = index
        ready_read, ready_write = os.pipe()
        env = dict(os.environ)
        for name in ("TURBOLIFT", "TURBOLIFT_CLUSTER"):
            env.pop(name, None)  # a worker must never distribute in turn
        package_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        command = [
            sys.executable, "-m", "turbolift", "worker",
            "--listen", listen, "--cache-dir", cache_dir,
            "--ready-fd", str(ready_write), "--token-stdin", "--exit-with-stdin", "--no-restart",
            "--worker-id", f"local-{index}",
        ]
        try:
            # A neutral cwd: the project must reach the worker only as bundles.
            # A new session: Ctrl-C in the terminal is the caller's to handle.
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, cwd=run_dir, env=env,
                pass_fds=(ready_write,), start_new_session=True,
            )
        finally:
            os.close(ready_write)
        self._ready_read = ready_read
        assert self.process.stdin is not None
        self.process.stdin.write((token or "").encode() + b"\n")
        self.process.stdin.flush()
        self.address: Optional[str] = None

    def wait_address(self, deadline: float) -> str:
        """Block until the worker reports the address it listens on."""
        if self.address is not None:
            return self.address
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(f"local worker {self.index} did not start in time")
            readable, _, _ = select.select([self._ready_read], [], [], remaining)
            if readable:
                chunk = os.read(self._ready_read, 1024)
                if not chunk:
                    code = self.process.poll()
                    raise ClusterError(
                        f"local worker {self.index} exited during start-up (exit code {code}); "
                        "its error output is above")
                data += chunk
        os.close(self._ready_read)
        self.address = data.decode().strip()
        return self.address

    def signal_stop(self) -> None:
        """Ask the worker to exit now, without waiting for it."""
        process = self.process
        if process.stdin is not None:
            try:
                process.stdin.close()  # the cue a worker also gets if we die
            except OSError:
                pass
        if process.poll() is None:
            # Nobody awaits its calls any more: no need for a graceful drain.
            process.terminate()
        if self.address is None:
            try:
                os.close(self._ready_read)
            except OSError:
                pass
            self.address = ""

    def stop(self, grace: float) -> None:
        self.signal_stop()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class LocalQueue(Cluster):
    """Worker processes on this machine.

    Workers are fresh interpreters (never forks of a process holding gRPC
    state), tied to this process: they exit when it exits, however it exits,
    SIGKILL included (each worker watches a pipe from this process and
    leaves at end-of-file).

    ``transport="unix"`` (the default where available): each worker listens
    on a unix socket inside a private directory (mode 0700) of this run, so
    the file system keeps every other user out and calls need no token.
    ``transport="tcp"``: ephemeral loopback ports, protected by a random
    per-run token that each call carries.
    """

    def __init__(self, workers: Optional[int] = None, *, cache_dir: Optional[str] = None,
                 start_timeout: float = 60.0, transport: Optional[str] = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigurationError(f"LocalQueue needs at least one worker, got {workers}")
        transport = transport or ("unix" if hasattr(socket, "AF_UNIX") else "tcp")
        if transport not in ("unix", "tcp"):
            raise ConfigurationError(f"LocalQueue transport must be 'unix' or 'tcp', not {transport!r}")
        self.workers = workers or os.cpu_count() or 1
        self.cache_dir = cache_dir or default_cache_dir()
        self.start_timeout = start_timeout
        self.transport = transport
        self.token = secrets.token_urlsafe(32) if transport == "tcp" else None
        self._spawned = itertools.count()
        self._lock = threading.Lock()
        self._procs: list[_LocalWorker] = []
        self._retired: list[_LocalWorker] = []   # replaced after dying; kept for exit_reason
        self._run_dir: Optional[str] = None
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._procs or self._stopped:
                return
            self._run_dir = tempfile.mkdtemp(prefix="turbolift-run-")
            self._procs = [self._spawn(i) for i in range(self.workers)]

    def _spawn(self, index: int) -> _LocalWorker:
        assert self._run_dir is not None
        if self.transport == "unix":  # a fresh path for a replacement, too
            listen = f"unix:{self._run_dir}/worker-{index}-{next(self._spawned)}.sock"
        else:
            listen = "127.0.0.1:0"
        return _LocalWorker(index, self.cache_dir, self.token, self._run_dir, listen)

    def wait_ready(self, timeout: float) -> list[str]:
        self.start()
        deadline = time.monotonic() + min(timeout, self.start_timeout)
        return [proc.wait_address(deadline) for proc in list(self._procs)]

    def replace(self, address: str, timeout: float) -> Optional[str]:
        with self._lock:
            if self._stopped:
                return None
            for slot, proc in enumerate(self._procs):
                if proc.address == address:
                    try:
                        proc.process.wait(2.0)  # a killed process may take a moment to go
                    except subprocess.TimeoutExpired:
                        return None  # still alive: the connection failed, not the worker
                    proc.stop(0)
                    self._retired.append(proc)
                    self._procs[slot] = self._spawn(proc.index)
                    fresh = self._procs[slot]
                    break
            else:
                return None
        return fresh.wait_address(time.monotonic() + timeout)

    def exit_reason(self, address: str, timeout: float = 0.0) -> Optional[str]:
        from ._nanny import describe_exit

        for proc in list(self._procs) + list(self._retired):
            if proc.address == address:
                try:
                    return describe_exit(proc.process.wait(timeout))
                except subprocess.TimeoutExpired:
                    return None
        return None

    def pids(self) -> list[int]:
        """Process ids of the current worker processes."""
        return [proc.process.pid for proc in self._procs]

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            procs, self._procs = self._procs, []
        for proc in procs:  # all at once: they exit in parallel
            proc.signal_stop()
        for proc in procs:
            proc.stop(grace=2.0)
        if self._run_dir:
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"LocalQueue(workers={self.workers}, transport={self.transport!r})"


def default_cache_dir() -> str:
    """Where bundles are cached: $TURBOLIFT_CACHE_DIR, else the user cache."""
    explicit = os.environ.get("TURBOLIFT_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "turbolift")


def resolve(spec: object, workers: Optional[int] = None) -> Cluster:
    """Turn a cluster object or URL into a :class:`Cluster`.

    URLs: ``local``, ``local:N``, ``grpc://host:port[,host:port...][?token_file=F]``,
    ``k8s://NAMESPACE?image=IMAGE&replicas=N...`` (see :mod:`turbolift.kubernetes`).
    None means a local cluster of ``workers`` (default: one per CPU).
    """
    if isinstance(spec, Cluster):
        return spec
    if spec is None or spec == "":
        return LocalQueue(workers=workers)
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"a cluster must be a Cluster object or a URL string, got {type(spec).__name__}")
    if spec == "local" or spec.startswith("local:"):
        count = spec.partition(":")[2]
        if count and not count.isdigit():
            raise ConfigurationError(f"cluster URL {spec!r}: write 'local' or 'local:N' with N a number")
        return LocalQueue(workers=int(count) if count else workers)
    parts = urlsplit(spec)
    if parts.scheme in ("grpc", "grpcs"):
        return _workers_from_url(spec)
    if parts.scheme in ("k8s", "kubernetes"):
        from .kubernetes import Kubernetes  # the Kubernetes client itself loads only at start

        return Kubernetes.from_url(spec)
    raise ConfigurationError(
        f"unknown cluster URL {spec!r}; use 'local', 'local:N', 'grpc://host:port,host:port', "
        "'grpcs://host:port?ca=ca.pem' or 'k8s://NAMESPACE?image=IMAGE'")


def _workers_from_url(spec: str) -> Workers:
    """``grpc://h:p,h:p?token_file=F`` or ``grpcs://...&ca=F&cert=F&key=F&server_name=N``."""
    parts = urlsplit(spec)
    hosts = [h for h in parts.netloc.split(",") if h]
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    known = {"token_file"} | ({"ca", "cert", "key", "server_name"} if parts.scheme == "grpcs" else set())
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigurationError(f"cluster URL {spec!r}: unknown parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
    tls = None
    if parts.scheme == "grpcs":
        from ._tls import TLS

        tls = TLS(ca=query.get("ca"), cert=query.get("cert"), key=query.get("key"),
                  server_name=query.get("server_name"))
    return Workers(*hosts, token_file=query.get("token_file"), tls=tls)


__all__ = ["Cluster", "LocalQueue", "Workers", "resolve", "default_cache_dir"]

