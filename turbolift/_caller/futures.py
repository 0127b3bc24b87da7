"""Small helpers for the caller's ``concurrent.futures.Future`` objects."""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import weakref
from typing import Any, Optional

from ..errors import TurboliftError, raised_on_worker
from .daemon_pool import in_daemon_thread_of_the_program

_PENDING: "weakref.WeakSet[cf.Future]" = weakref.WeakSet()   # futures of calls, maybe not done


def new_future() -> cf.Future:
    """A future for a call (see :func:`_forked`)."""
    future: cf.Future = cf.Future()
    _PENDING.add(future)
    return future


def _forked() -> None:
    """In a child forked from the caller, the futures of calls the parent had in flight would never
    settle (the threads and streams that settle them are the parent's): each fails at once with a
    TurboliftError that says so, and a child that waits on one, or on a ``map`` whose batches were in
    flight, is told why instead of waiting for ever. Their done-callbacks are the parent's, not run."""
    error = TurboliftError(f"this call was started by process {os.getppid()} before it forked: only that "
                           "process gets its result; call the function again in this process")
    for future in list(_PENDING):
        if future._state in (cf._base.PENDING, cf._base.RUNNING):
            # A fresh condition: a thread of the parent may have held this one at the fork, for good here.
            future._condition = threading.Condition()
            future._exception, future._state = error, cf._base.FINISHED
    _PENDING.clear()


os.register_at_fork(after_in_child=_forked)


_settling = 0   # threads in settle(): a future they completed may still be running its done-callbacks
_settled = threading.Condition()


def settle(out: cf.Future, value: Any = None, exc: Optional[BaseException] = None) -> None:
    """Complete ``out`` with ``value`` or ``exc`` unless it is done already (e.g. cancelled meanwhile).
    Its done-callbacks run here, before this returns (see :func:`wait_for_callbacks`).

    The function's own exception from a worker is stored without its traceback, which holds only
    turbolift's frames on this side: ``result()`` then shows the program's frames and
    concurrent.futures', as a local future does, with the worker's frames among its causes."""
    global _settling
    with _settled:
        _settling += 1
    try:
        if exc is not None:
            out.set_exception(exc.with_traceback(None) if raised_on_worker(exc) else exc)
        else:
            out.set_result(value)
    except cf.InvalidStateError:
        pass
    finally:
        with _settled:
            _settling -= 1
            if not _settling:
                _settled.notify_all()


def wait_for_callbacks() -> None:
    """Return once no future is being completed: a future seen done by a waiter may still be running
    its done-callbacks in the thread that completed it, which may submit further calls."""
    with _settled:
        _settled.wait_for(lambda: _settling == 0)


def copy_outcome(source: cf.Future, target: cf.Future) -> None:
    """Give ``target`` the result or exception of the finished ``source``."""
    try:
        value = source.result()
    except BaseException as exc:
        settle(target, exc=exc)
    else:
        settle(target, value=value)


class Submitted:
    """The futures a program got from ``submit`` on one dispatcher, until they are done."""

    def __init__(self) -> None:
        self._futures: set = set()

    def keep(self, future: cf.Future) -> cf.Future:
        """``future`` is waited for at the program's end (:meth:`wait`), held here even if the program
        dropped it; not when a daemon thread of the program submitted it (plain python stops such a
        thread where it is when the program ends); a done-callback's, in turbolift's threads, is."""
        if not in_daemon_thread_of_the_program():
            self._futures.add(future)
            future.add_done_callback(self._futures.discard)
        return future

    def wait(self) -> None:
        """Wait until every call the program submitted has ended: without turbolift, ``submit`` ran
        the call before it returned, so a call never waited for still has its effects. Calls submitted
        meanwhile (by a done-callback) are waited for too."""
        while self._futures:
            cf.wait(list(self._futures))
            wait_for_callbacks()   # (which may submit more; the done ones are discarded then)
