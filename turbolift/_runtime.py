"""The process-wide answer to "local or remote?".

Three modes:

* ``LOCAL`` (the default): marked functions run in-process; nothing of the
  transport is imported.
* ``DISTRIBUTED``: switched on by ``python -m turbolift`` or the
  ``TURBOLIFT=1`` site hook (:mod:`turbolift._enabling`), which hands the
  runtime a *client*: the caller side's object that binds marked functions
  to stubs and owns the clusters it started. The runtime never imports the
  caller side itself.
* ``WORKER``: inside a worker; marking is disabled so the real function runs.
"""
from __future__ import annotations

import atexit
import threading
from typing import Any, Optional, Protocol

from ._settings import Settings

LOCAL = "local"
DISTRIBUTED = "distributed"
WORKER = "worker"


class Client(Protocol):
    """What the runtime needs of the caller side (``turbolift._caller.client.Client``)."""

    settings: Settings

    def bind(self, function: Any) -> Any: ...

    def worker_pids(self) -> list[int]: ...

    def shutdown(self) -> None: ...


_mode = LOCAL
_client: Optional[Client] = None
_lock = threading.RLock()
_atexit_registered = False


def enable(client: Client) -> None:
    """Switch distribution on: functions marked from now on are bound through ``client``."""
    global _mode, _client, _atexit_registered
    with _lock:
        previous, _client, _mode = _client, client, DISTRIBUTED
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
    if previous is not None and previous is not client:
        previous.shutdown()


def disable() -> None:
    """Stop every cluster and return to local mode (functions marked from now on run locally)."""
    global _mode, _client
    shutdown()
    with _lock:
        _mode, _client = LOCAL, None


def enter_worker_mode() -> None:
    """Disable marking: the worker imports user modules to run them."""
    global _mode
    _mode = WORKER


def bind(function: Any) -> Optional[Any]:
    """The remote stub for ``function``, or None to run it locally."""
    client = _client
    if _mode != DISTRIBUTED or client is None:
        return None
    return client.bind(function)


def client() -> Optional[Client]:
    """The caller side of this process while distribution is on, else None."""
    return _client if _mode == DISTRIBUTED else None


def worker_pids() -> list[int]:
    """Process ids of the local worker processes this process started."""
    found = _client
    return found.worker_pids() if found is not None else []


def shutdown() -> None:
    """Stop every cluster this process started. Idempotent."""
    found = _client
    if found is not None:
        found.shutdown()
