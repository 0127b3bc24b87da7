"""A thread pool that keeps serving while the interpreter exits, and never holds the exit up.

``concurrent.futures.ThreadPoolExecutor`` is made for the program's own work:
once the main module has returned it refuses new tasks ("cannot schedule new
futures after interpreter shutdown") and joins its threads before the
program's other threads have ended. Turbolift's threads carry the program's
calls, and the program may still call from its other threads and its exit
handlers then, as it can without turbolift. So they are daemon threads that
take tasks until :meth:`DaemonPool.close`; what they still carry when the
clusters stop at the program's end is cancelled there, not waited for.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import queue
import threading
from typing import Any, Callable


class PoolThread(threading.Thread):
    """A thread of a :class:`DaemonPool`: a daemon, but turbolift's, not one of the program's."""


def in_daemon_thread_of_the_program() -> bool:
    """True in a daemon thread the program started (not in turbolift's own, which run its callbacks)."""
    thread = threading.current_thread()
    return thread.daemon and not isinstance(thread, PoolThread)


class DaemonPool:
    """Up to ``limit`` daemon threads named ``name_N``, started as tasks come and none is idle."""

    def __init__(self, limit: int, name: str) -> None:
        self._limit = limit
        self._name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)   # threads waiting for a task
        self._lock = threading.Lock()
        self._threads = 0
        self._numbers = itertools.count()
        self._closed = False

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        """Run ``fn(*args)`` on a thread of the pool; its future has the outcome. RuntimeError once
        :attr:`closed`, or when no thread can be started and the pool has none (Python 3.12 refuses
        new threads once the interpreter exits; a pool with threads queues the task for them)."""
        future: cf.Future = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name}: closed")
            if not self._idle.acquire(blocking=False) and self._threads < self._limit:
                try:
                    PoolThread(target=self._serve, name=f"{self._name}_{next(self._numbers)}",
                               daemon=True).start()
                except RuntimeError:
                    if not self._threads:
                        raise
                else:
                    self._threads += 1
            self._tasks.put((future, fn, args))
        return future

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> list[tuple]:
        """Take no more tasks; cancel the futures of those not started, and return their arguments
        (their owner may have futures of its own to settle). The threads end after their task."""
        with self._lock:
            self._closed = True
            threads = self._threads
        unstarted = []
        while True:
            try:
                future, _, args = self._tasks.get_nowait()
            except queue.Empty:
                break
            if future.cancel():
                unstarted.append(args)
        for _ in range(threads):
            self._tasks.put(None)
        return unstarted

    def _serve(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, fn, args = task
            del task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:   # (the future carries it, as an executor's does)
                    future.set_exception(exc)
            del future, fn, args   # (nothing of a finished task stays alive while this thread waits)
            self._idle.release()
