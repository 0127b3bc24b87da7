"""Calls that return futures: ``submit``, the batches of ``map`` and coalesced submits.

Each runs exactly as a synchronous call does (:meth:`Dispatcher.call`), in
a daemon thread of this pool (:mod:`.daemon_pool`: it serves the program's
other threads and exit handlers after the main module ended), and settles
its future. ``Future.cancel()`` works until the call ends: it cancels the
stream the call runs on, which stops it on the worker. Futures are
completed outside turbolift's own code, so the user's done-callbacks may
call marked functions remotely.
"""
from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from .. import _runtime
from .calls import Call
from .daemon_pool import DaemonPool
from .futures import new_future, settle

MAX_THREADS = 256   # calls carried at once; more wait here, unsent


class AsyncCalls:
    """The asynchronous path of one dispatcher."""

    def __init__(self, dispatcher: Any) -> None:  # a Dispatcher, which imports this module
        self._dispatcher = dispatcher
        self._pool = DaemonPool(MAX_THREADS, "turbolift-call")

    def close(self) -> None:
        for _, out in self._pool.close():   # calls that never started: their futures say so, not hang
            settle(out, exc=cf.CancelledError("the cluster was shut down"))

    def submit(self, call: Call) -> cf.Future:
        out = new_future()
        # The callback holds the call's handle, not the call: a future kept after its call ended
        # must not keep the arguments (an array's exported memory) alive with it.
        handle = call.handle
        out.add_done_callback(lambda done: handle.cancel() if done.cancelled() else None)
        try:
            self._pool.submit(self._run, call, out)
        except RuntimeError as exc:  # shut down meanwhile, or no thread to be had: say so rather than hang
            settle(out, exc=cf.CancelledError("the cluster was shut down") if self._pool.closed else
                   RuntimeError(f"turbolift cannot start a thread for this call: {exc}"))
        return out

    def _run(self, call: Call, out: cf.Future) -> None:
        if out.done():  # cancelled while it waited for a thread
            return
        with _runtime.turbolift_code():
            try:
                value = self._dispatcher.call(call)
            except BaseException as exc:
                with _runtime.user_code():
                    settle(out, exc=exc)
                return
        with _runtime.user_code():
            settle(out, value=value)
