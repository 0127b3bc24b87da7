"""The caller side as the runtime sees it: binds marked functions, owns the clusters started.

A :class:`Client` is made when distribution is switched on and handed to
:mod:`turbolift._runtime`, which never imports this side itself (so local
mode imports no gRPC). It keeps one :class:`Dispatcher` per cluster, made
on first use and closed at shutdown. gRPC is imported with the first stub,
not with this module: a process that inherits ``TURBOLIFT=1`` but marks
nothing never loads it.
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Optional

from .. import _runtime
from .._settings import Settings
from .._wire import allocator, grpc_import
from .._wire.auth import read_token
from ..platforms.registry import resolve
from . import shown_warnings

if TYPE_CHECKING:  # pragma: no cover
    from .dispatcher import Dispatcher
    from .preload import Preloader
    from .stub import RemoteStub


_CLIENTS: "weakref.WeakSet[Client]" = weakref.WeakSet()
_loading_lock = threading.Lock()
_loaded = False


def _forked() -> None:
    global _loading_lock
    # A thread that was loading the caller side holds the lock for good in the child: a fresh one.
    _loading_lock = threading.Lock()
    if len(_CLIENTS):
        _runtime.forked_child()


os.register_at_fork(after_in_child=_forked)


def _load_caller_side() -> None:
    """Import the caller side, gRPC included (with its fork handlers off: see
    :mod:`turbolift._wire.grpc_import`), once."""
    global _loaded
    if _loaded:
        return
    with _loading_lock:
        if _loaded:
            return
        grpc_import.import_grpc()
        from . import coalesce, dispatcher, mapping, preload, stub  # noqa: F401
        _loaded = True


class Client:
    """The caller side of one distributed process."""

    def __init__(self, settings: Settings, default_cluster: Any = None) -> None:
        self.settings = settings
        # The default cluster: a Cluster object, else the configured URL (None: local).
        self._default = default_cluster if default_cluster is not None else settings.cluster
        self._lock = threading.Lock()
        self._clusters: dict[Any, Any] = {}     # resolved platforms, by spec
        self._dispatchers: dict[Any, "Dispatcher"] = {}
        self._loading: Optional[threading.Thread] = None
        self._preloader: Optional["Preloader"] = None
        self._started_early: set = set()        # keys of clusters start_default started
        self._pid = os.getpid()                 # (a child this process forks owns none of them)
        _CLIENTS.add(self)
        shown_warnings.remember()   # (what the program's imports warn, a worker's need not again)

    @staticmethod
    def load() -> None:
        """Import the whole caller side now (it is otherwise imported with the first stub)."""
        _load_caller_side()

    def bind(self, function: Any) -> "RemoteStub":
        """The stub that runs ``function`` (a ``TurboliftFunction``) remotely."""
        _load_caller_side()
        from .stub import RemoteStub

        stub = RemoteStub(function, self)
        if self.settings.preload_or_default:
            self._preloads().note(function)
        return stub

    def _preloads(self) -> "Preloader":
        with self._lock:
            if self._preloader is None:
                # (the caller side is loaded: only bind, which loads it first, gets here)
                from .preload import Preloader

                self._preloader = Preloader(self)
            return self._preloader

    def _key(self, cluster: Any) -> tuple[Any, Any]:
        spec = self._default if cluster is None else cluster
        return spec, spec if isinstance(spec, (str, type(None))) else id(spec)

    def cluster_key(self, cluster: Any) -> Any:
        """What identifies ``cluster`` (a Cluster, a URL, None for the default) among this client's."""
        return self._key(cluster)[1]

    def _cluster(self, spec: Any, key: Any) -> Any:
        """The platform of ``spec``, resolved once (called with the lock held)."""
        found = self._clusters.get(key)
        if found is None:
            found = self._clusters[key] = resolve(spec, workers=self.settings.workers)
        return found

    def dispatcher(self, cluster: Any) -> "Dispatcher":
        """The dispatcher of ``cluster`` (a Cluster or URL; None: the default), made once."""
        spec, key = self._key(cluster)
        with self._lock:
            found = self._dispatchers.get(key)
            if found is None:
                _load_caller_side()
                from .dispatcher import Dispatcher

                allocator.bound()   # this program now receives payloads: let them go back when freed
                resolved = self._cluster(spec, key)
                token = None
                if resolved.token is None and self.settings.token_file:
                    token = read_token(None, self.settings.token_file)
                found = self._dispatchers[key] = Dispatcher(resolved, token=token,
                                                              prefix=self.settings.prefix_or_default)
            return found

    def started_dispatcher(self, cluster: Any) -> Optional["Dispatcher"]:
        """The dispatcher of ``cluster`` if its workers were started already (at start-up, or by
        a call), else None: a preload never starts workers (a helper process that inherits
        ``TURBOLIFT=1`` and calls nothing remote starts none)."""
        spec, key = self._key(cluster)
        with self._lock:
            if key not in self._dispatchers and key not in self._started_early:
                return None
        return self.dispatcher(cluster)

    def start_default(self) -> None:
        """Start the default cluster now, so that workers boot while the program loads.

        The platform starts its workers first (spawning them needs no gRPC); the caller side,
        gRPC included (a third of a second), is then imported in a thread of its own while the
        program itself starts. Its first remote call waits for that import if it is not done.
        """
        spec, key = self._key(None)
        with self._lock:
            cluster = self._cluster(spec, key)
            self._started_early.add(key)
        cluster.start()
        grpc_import.prepare()   # (here, while the program has not started a thread of its own)

        def load() -> None:
            try:
                self.load()
            except Exception:   # the first call imports it again and says what is wrong
                pass

        self._loading = threading.Thread(target=load, name="turbolift-load", daemon=True)
        self._loading.start()

    def worker_pids(self) -> list[int]:
        with self._lock:
            clusters = list(self._clusters.values())
        return [pid for cluster in clusters for pid in cluster.local_pids()]

    def finish(self) -> None:
        """The program ended: wait for the calls it submitted and never waited for."""
        with self._lock:
            dispatchers = list(self._dispatchers.values())
        for each in dispatchers:
            each.submitted.wait()

    def wait_loaded(self) -> None:
        """Wait (bounded) for the caller side's import in the background to end: never tear down, or
        let the interpreter end, in the middle of an import (after an uncaught KeyboardInterrupt, an
        import running as the interpreter ends costs the exit its status of SIGINT)."""
        loading = self._loading
        if loading is not None:
            loading.join(30)

    def shutdown(self) -> None:
        """Stop every cluster this client started. Idempotent; nothing in a child this process forked."""
        if os.getpid() != self._pid:
            return
        self.wait_loaded()
        with self._lock:
            preloader = self._preloader
        if preloader is not None:
            preloader.close()
        with self._lock:
            dispatchers = list(self._dispatchers.values())
            self._dispatchers.clear()
            used = {id(each.cluster) for each in dispatchers}
            started = [cluster for cluster in self._clusters.values() if id(cluster) not in used]
            self._clusters.clear()
        for each in dispatchers:
            each.close()
        for cluster in started:   # started early, never used by a call
            cluster.stop()
        if preloader is not None:
            preloader.join()   # its exchanges end with the channels just closed
