"""Stopping user code when its caller no longer wants the result.

When an RPC is cancelled (``Future.cancel()`` in the caller) or its
deadline passes, gRPC runs the context's callbacks. :class:`Interruptible`
then raises :class:`CallCancelled` inside the thread running the user's
function, with ``PyThreadState_SetAsyncExc``. The exception arrives at the
next Python bytecode the function runs (a blocking C call such as
``time.sleep`` finishes first), so CPU-bound Python loops stop promptly.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Any

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


class CallCancelled(BaseException):
    """Raised inside a user function whose call was cancelled or timed out.

    A BaseException, like KeyboardInterrupt, so that ordinary ``except
    Exception`` blocks in user code do not swallow it.
    """


class Interruptible:
    """Context manager around one call of user code on a gRPC handler thread."""

    __slots__ = ("_lock", "_thread", "_running", "_injected")

    def __init__(self, context: Any) -> None:
        self._lock = threading.Lock()
        self._thread = threading.get_ident()
        self._running = False
        self._injected = False
        if not context.add_callback(self._on_rpc_done):
            raise CallCancelled("the call was cancelled before it started")

    def __enter__(self) -> "Interruptible":
        self._running = True
        return self

    def _on_rpc_done(self) -> None:
        # Runs when the RPC ends for any reason; only interrupt while the
        # user's function is still running (i.e. nobody awaits its result).
        with self._lock:
            if self._running:
                self._injected = True
                _set_async_exc(self._thread, CallCancelled)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._running = False
            if self._injected:
                # Withdraw an exception that has not been delivered yet, so it
                # cannot surface later in code that is not the user's.
                _set_async_exc(self._thread, None)
