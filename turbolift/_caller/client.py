"""The caller side as the runtime sees it: binds marked functions, owns the clusters started.

A :class:`Client` is made when distribution is switched on and handed to
:mod:`turbolift._runtime`, which never imports this side itself (so local
mode imports no gRPC). It keeps one :class:`Dispatcher` per cluster, made
on first use and closed at shutdown. gRPC is imported with the first stub,
not with this module: a process that inherits ``TURBOLIFT=1`` but marks
nothing never loads it.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .._settings import Settings
from .._wire.auth import read_token
from ..platforms.registry import resolve

if TYPE_CHECKING:  # pragma: no cover
    from .dispatcher import Dispatcher
    from .stub import RemoteStub


class Client:
    """The caller side of one distributed process."""

    def __init__(self, settings: Settings, default_cluster: Any = None) -> None:
        self.settings = settings
        # The default cluster: a Cluster object, else the configured URL (None: local).
        self._default = default_cluster if default_cluster is not None else settings.cluster
        self._lock = threading.Lock()
        self._dispatchers: dict[Any, "Dispatcher"] = {}

    @staticmethod
    def load() -> None:
        """Import the whole caller side now (it is otherwise imported with the first stub)."""
        from . import coalesce, dispatcher, mapping, stub  # noqa: F401

    def bind(self, function: Any) -> "RemoteStub":
        """The stub that runs ``function`` (a ``TurboliftFunction``) remotely."""
        from .stub import RemoteStub

        return RemoteStub(function, self)

    def dispatcher(self, cluster: Any) -> "Dispatcher":
        """The dispatcher of ``cluster`` (a Cluster or URL; None: the default), made once."""
        spec = self._default if cluster is None else cluster
        key = spec if isinstance(spec, (str, type(None))) else id(spec)
        with self._lock:
            found = self._dispatchers.get(key)
            if found is None:
                from .dispatcher import Dispatcher

                resolved = resolve(spec, workers=self.settings.workers)
                token = None
                if resolved.token is None and self.settings.token_file:
                    token = read_token(None, self.settings.token_file)
                found = self._dispatchers[key] = Dispatcher(resolved, token=token,
                                                              prefix=self.settings.prefix_or_default)
            return found

    def start_default(self) -> None:
        """Start the default cluster now, so that workers boot while the program loads."""
        self.dispatcher(None).start()

    def worker_pids(self) -> list[int]:
        with self._lock:
            dispatchers = list(self._dispatchers.values())
        return [pid for each in dispatchers for pid in each.cluster.local_pids()]

    def shutdown(self) -> None:
        """Stop every cluster this client started. Idempotent."""
        with self._lock:
            dispatchers = list(self._dispatchers.values())
            self._dispatchers.clear()
        for each in dispatchers:
            each.close()
