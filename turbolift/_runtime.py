"""The process-wide answer to "local or remote?".

Three modes:

* ``LOCAL`` (the default): marked functions run in-process; nothing of the
  transport is imported.
* ``DISTRIBUTED``: switched on by ``python -m turbolift`` or the
  ``TURBOLIFT=1`` site hook (:mod:`turbolift._enabling`), which hands the
  runtime a *client*: the caller side's object that binds marked functions
  to stubs and owns the clusters it started. The runtime never imports the
  caller side itself.
* ``WORKER``: inside a worker. The worker runs the real function; marked
  functions that it calls are bound through what the worker registered
  (nested calls, which go back to the caller while a call runs).
"""
from __future__ import annotations

import atexit
import signal
import sys
import threading
from typing import Any, Callable, Optional, Protocol

from ._settings import Settings

LOCAL = "local"
DISTRIBUTED = "distributed"
WORKER = "worker"


class Client(Protocol):
    """What the runtime needs of the caller side (``turbolift._caller.client.Client``)."""

    settings: Settings

    def bind(self, function: Any) -> Any: ...

    def worker_pids(self) -> list[int]: ...

    def finish(self) -> None: ...   # the program ended: wait for the calls it submitted

    def wait_loaded(self) -> None: ...   # its own imports in the background have ended

    def shutdown(self) -> None: ...


_mode = LOCAL
_client: Optional[Client] = None
_worker_bind: Optional[Callable[[Any], Any]] = None
_lock = threading.RLock()
_atexit_registered = False
_forked = False   # this process is a child forked from one that distributes


def enable(client: Client) -> None:
    """Switch distribution on: functions marked from now on are bound through ``client``."""
    global _mode, _client, _atexit_registered
    with _lock:
        previous, _client, _mode = _client, client, DISTRIBUTED
        if not _atexit_registered:
            atexit.register(program_ended)
            _atexit_registered = True
    if previous is not None and previous is not client:
        previous.shutdown()


def disable() -> None:
    """Stop every cluster and return to local mode (functions marked from now on run locally)."""
    global _mode, _client
    shutdown()
    with _lock:
        _mode, _client = LOCAL, None


def enter_worker_mode(bind: Optional[Callable[[Any], Any]] = None) -> None:
    """Become a worker: functions marked from now on are bound with ``bind`` (None: run locally)."""
    global _mode, _worker_bind
    _mode, _worker_bind = WORKER, bind


def bind(function: Any) -> Optional[Any]:
    """The stub for ``function``, or None to run it locally."""
    if _mode == WORKER:
        return _worker_bind(function) if _worker_bind is not None else None
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


_exited = threading.Event()   # the program has ended: its clusters were stopped for it


def program_ended() -> None:
    """The program ended (the interpreter exits, after the program's other threads and exit handlers):
    wait for the calls it submitted, then stop every cluster, and let daemon threads still calling
    wait for the end."""
    found = _client
    if found is not None:
        _finish(found)
    _exited.set()
    _uninterrupted(shutdown)


def client_ended(client: Client) -> None:
    """The end of a program for a client of its own (:class:`turbolift.Executor`'s in plain python),
    as for the process's in :func:`program_ended`."""
    _finish(client)
    _uninterrupted(client.shutdown)


def _finish(client: Client) -> None:
    """Wait for the calls the program submitted, unless a Ctrl-C ended it (another stops the wait)."""
    if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        return
    try:
        client.finish()
    except KeyboardInterrupt:
        pass


def _uninterrupted(stop: Callable[[], None]) -> None:
    """``stop()`` with Ctrl-C ignored: stopping a cluster is bounded (a busy worker's grace period),
    and one stopped half-way would leave its busy workers running after the program."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:   # (not the main thread: nothing to mask)
        stop()
        return
    try:
        stop()
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def stop_daemon_thread_at_exit() -> None:
    """In a daemon thread that calls a marked function once the program ended (its clusters
    stopped): wait here for good. Plain python stops such a thread, silently, when the interpreter
    ends; raising would print a traceback about a cluster the program never stopped. Returns at
    once anywhere else."""
    if _exited.is_set() and threading.current_thread().daemon:
        threading.Event().wait()


# -- turbolift's own code never goes through a stub ------------------------------
# While turbolift prepares or carries a call, a marked function it happens to
# use (``--remote json:dumps``) runs in place: going remote from inside the
# stub would wait on itself.
_guard = threading.local()


def runs_in_place() -> bool:
    """True where a marked function runs in this process whatever it is bound to: while the current
    thread runs turbolift's own code, and in a child forked from a caller or a worker
    (:func:`forked_child`)."""
    return _forked or getattr(_guard, "level", 0) > 0


def in_forked_child() -> bool:
    """True in a child forked from a caller or a worker (:func:`forked_child`)."""
    return _forked


def forked_child() -> None:
    """Called in a child forked (``os.fork``, multiprocessing's fork start method) from a caller or
    from a worker serving calls. gRPC does not survive fork: the parent's channels and streams are
    unusable here (a call, or a nested call, waited for ever), and the parent's clusters are not this
    child's to stop. So marked functions run in the child, as they would without turbolift, and its
    exit tears nothing down."""
    global _mode, _client, _worker_bind, _forked
    _forked = True
    _mode, _client, _worker_bind = LOCAL, None, None


class _TurboliftCode:
    """``with turbolift_code():`` marks the current thread as running turbolift's own code
    (a class, not a generator: it is on every call's path)."""

    __slots__ = ()

    def __enter__(self) -> None:
        _guard.level = getattr(_guard, "level", 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        _guard.level -= 1


class _UserCode:
    """``with user_code():`` inside turbolift's code, a stretch that acts for the user
    (their callbacks, nested calls): marked functions go remote again."""

    __slots__ = ()

    def __enter__(self) -> None:
        saved = getattr(_guard, "saved", None)
        if saved is None:
            saved = _guard.saved = []
        saved.append(getattr(_guard, "level", 0))
        _guard.level = 0

    def __exit__(self, *exc_info: object) -> None:
        _guard.level = _guard.saved.pop()


_TURBOLIFT_CODE = _TurboliftCode()
_USER_CODE = _UserCode()


def turbolift_code() -> _TurboliftCode:
    return _TURBOLIFT_CODE


def user_code() -> _UserCode:
    return _USER_CODE
