"""Stopping user code when its caller no longer wants the result.

When an RPC is cancelled (``Future.cancel()`` in the caller) or its
deadline passes, the call's gRPC context stops being active. One watchdog
thread per worker looks at the running calls every ``PERIOD`` seconds and
raises :class:`CallCancelled` inside the thread of each call whose RPC has
ended, with ``PyThreadState_SetAsyncExc``. The exception arrives at the next
Python bytecode the function runs (a blocking C call such as ``time.sleep``
finishes first), so CPU-bound Python loops stop within about ``PERIOD``.

A watchdog rather than a callback per call keeps the per-call cost to two
dictionary operations: most calls end long before anyone looks.
"""
from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any

PERIOD = 0.05

def _set_async_exc(thread: int, exception: Any) -> None:
    """Raise ``exception`` in ``thread`` at its next bytecode; None withdraws a pending one.

    No ``argtypes``: ctypes must pass None as NULL (which withdraws), not as
    ``Py_None`` (which would raise SystemError in the thread).
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(exception) if exception is not None else None)


class CallCancelled(BaseException):
    """Raised inside a user function whose call was cancelled or timed out.

    A BaseException, like KeyboardInterrupt, so that ordinary ``except
    Exception`` blocks in user code do not swallow it.
    """


class Watchdog:
    """The calls running on this worker, and the thread that interrupts abandoned ones."""

    def __init__(self, period: float = PERIOD, slots: int = 16) -> None:
        self._period = period
        # At most ``slots`` calls run user code at once; more wait for a slot
        # (holding a gRPC thread, of which the server has plenty to spare, so
        # that health checks and uploads are never stuck behind long calls).
        self._slots = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._running: dict[int, Any] = {}     # handler thread id -> its gRPC context
        self._interrupted: set[int] = set()
        self._served = itertools.count()
        self.served = 0
        self._thread = threading.Thread(target=self._watch, name="turbolift-watchdog", daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        return len(self._running)

    def begin(self, context: Any) -> None:
        """Called by a handler thread before it runs user code; waits for a free slot.

        Raises CallCancelled if the call is abandoned while it waits.
        """
        while not self._slots.acquire(timeout=self._period):
            if not context.is_active():
                raise CallCancelled("the call was abandoned while it waited for a free slot")
        thread = threading.get_ident()
        self._interrupted.discard(thread)  # a flag left by an earlier call of this thread
        self._running[thread] = context

    def end(self) -> None:
        """Called by the same thread once user code has returned or raised."""
        thread = threading.get_ident()
        self.served = next(self._served) + 1
        self._slots.release()
        with self._lock:
            self._running.pop(thread, None)
            if thread in self._interrupted:
                # Withdraw an exception that has not been delivered yet, so it
                # cannot surface later in code that is not the user's.
                self._interrupted.discard(thread)
                _set_async_exc(thread, None)

    def _watch(self) -> None:
        stop = threading.Event()
        while not stop.wait(self._period):
            with self._lock:
                for thread, context in list(self._running.items()):
                    if not context.is_active() and thread not in self._interrupted:
                        self._interrupted.add(thread)
                        _set_async_exc(thread, CallCancelled)
