"""The process-wide answer to "local or remote?".

Three modes:

* ``LOCAL`` (the default): marked functions run in-process; nothing of the
  transport is imported.
* ``DISTRIBUTED``: switched on by ``python -m turbolift`` or the
  ``TURBOLIFT=1`` site hook; marked functions are bound to client stubs.
* ``WORKER``: inside a worker; marking is disabled so the real function runs.

The runtime also owns the clusters that were started, so that they can be
torn down exactly once at exit.
"""
from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    from ._client import Dispatcher
    from ._marker import TurboliftFunction
    from .platforms import Cluster

LOCAL = "local"
DISTRIBUTED = "distributed"
WORKER = "worker"

_mode = LOCAL
_default_cluster: Any = None          # a URL string or a Cluster, from the CLI/config
_settings: dict = {}                   # token_file, timeout, ...
_lock = threading.RLock()
_dispatchers: dict = {}               # cluster key -> Dispatcher
_atexit_registered = False


def mode() -> str:
    return _mode


def is_distributed() -> bool:
    return _mode == DISTRIBUTED


def enable(cluster: Any = None, **settings: Any) -> None:
    """Switch distribution on for this process.

    ``cluster`` is the default cluster (URL or object) for functions marked
    without one. ``settings`` are defaults such as ``token_file`` and
    ``timeout``.
    """
    global _mode, _default_cluster, _atexit_registered
    with _lock:
        _mode = DISTRIBUTED
        _default_cluster = cluster
        _settings.update({k: v for k, v in settings.items() if v is not None})
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True


def disable() -> None:
    """Stop every cluster and return to local mode (functions marked from now on run locally)."""
    global _mode, _default_cluster
    shutdown()
    with _lock:
        _mode = LOCAL
        _default_cluster = None
        _settings.clear()


def worker_pids() -> list[int]:
    """Process ids of the local worker processes this process started."""
    with _lock:
        found = list(_dispatchers.values())
    return [pid for each in found for pid in getattr(each.cluster, "pids", lambda: [])()]


def enter_worker_mode() -> None:
    """Disable marking: the worker imports user modules to run them."""
    global _mode
    _mode = WORKER


def setting(name: str, default: Any = None) -> Any:
    return _settings.get(name, default)


def bind(function: "TurboliftFunction") -> Optional[Any]:
    """Return the remote stub for ``function``, or None to run it locally."""
    if _mode != DISTRIBUTED:
        return None
    from ._stub import RemoteStub

    return RemoteStub(function)


def dispatcher(cluster: Any) -> "Dispatcher":
    """The (started) dispatcher for ``cluster``; None means the default."""
    from . import platforms
    from ._client import Dispatcher

    spec = _default_cluster if cluster is None else cluster
    key = spec if isinstance(spec, (str, type(None))) else id(spec)
    with _lock:
        found = _dispatchers.get(key)
        if found is None:
            resolved: "Cluster" = platforms.resolve(spec, workers=_settings.get("workers"))
            found = Dispatcher(resolved, token_file=_settings.get("token_file"))
            _dispatchers[key] = found
        return found


def start_default_cluster() -> None:
    """Start the default cluster now, so workers boot while the program loads."""
    dispatcher(None).start()


def shutdown() -> None:
    """Stop every cluster this process started. Idempotent."""
    with _lock:
        found = list(_dispatchers.values())
        _dispatchers.clear()
    for each in found:
        each.close()
