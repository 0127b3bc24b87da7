"""``turbolift.Executor``: a :class:`concurrent.futures.Executor` whose calls run on a cluster.

Code written for ``ProcessPoolExecutor`` switches by changing one line::

    with turbolift.Executor("local:4") as pool:      # or Executor() for the default cluster
        results = list(pool.map(crunch, range(100)))
        future = pool.submit(crunch, 10)
        value = await asyncio.get_running_loop().run_in_executor(pool, crunch, 10)

Any picklable callable may be submitted, marked or not: a marked function
runs as itself (its own bundle, timeout and retries); anything else (a
function, a lambda, a callable object) travels as an argument of a small
shipped helper, :func:`call_with`. Under ``python -m turbolift`` the
executor uses the program's clusters; in a plain ``python`` process it
starts its own caller side for its cluster, and :meth:`shutdown` stops
what it started.
"""
from __future__ import annotations

import atexit
import concurrent.futures as cf
import itertools
import threading
from typing import Any, Callable, Iterable, Iterator, Optional

from . import _runtime
from ._marker import TurboliftFunction, on


def call_with(function: Callable, args: tuple, kwargs: Optional[dict] = None) -> Any:
    """What a worker runs for a callable submitted to an Executor (it travels as the argument)."""
    return function(*args, **(kwargs or {}))


class Executor(cf.Executor):
    """Run submitted callables on ``cluster`` (a URL such as ``"local:4"`` or a Cluster object;
    None: the default cluster). ``timeout`` and ``retries`` apply to every call, as in :func:`on`."""

    def __init__(self, cluster: Any = None, *, timeout: Optional[float] = None,
                 retries: Optional[int] = None) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self._retries = retries
        self._lock = threading.Lock()
        self._futures: set[cf.Future] = set()
        self._shut = False
        self._own_client: Any = None
        if _runtime.client() is None:
            # A plain `python` process: a caller side of this executor's own, for its cluster only
            # (the rest of the program stays local).
            from ._caller.client import Client
            from ._settings import Settings

            # (No preloading: what this executor runs is known only as it is submitted.)
            self._own_client = Client(Settings(preload=False), default_cluster=cluster)
            # At the exit, as a concurrent.futures executor does: what was submitted ends first.
            atexit.register(_runtime.client_ended, self._own_client)
        self._apply = self._remote(on(timeout=timeout, retries=retries)(call_with))

    def _check_open(self) -> None:
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")

    def _remote(self, function: TurboliftFunction) -> TurboliftFunction:
        """``function`` bound to this executor's cluster."""
        if self._own_client is not None:
            return function.bound_through(self._own_client)
        return function.options(cluster=self._cluster) if self._cluster is not None else function

    def _as_remote(self, fn: Callable) -> tuple[TurboliftFunction, bool]:
        """The function to call, and whether ``fn`` must go as call_with's argument."""
        if isinstance(fn, TurboliftFunction):
            marked = fn.options(timeout=self._timeout, retries=self._retries)
            return self._remote(marked), False
        return self._apply, True

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        self._check_open()
        function, wrapped = self._as_remote(fn)
        future = function.submit(fn, args, kwargs) if wrapped else function.submit(*args, **kwargs)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: cf.Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1, progress: Any = None) -> Iterator:
        """Ordered results, as :meth:`concurrent.futures.Executor.map`; items travel in batches
        (chosen adaptively unless ``chunksize`` is more than 1)."""
        self._check_open()
        function, wrapped = self._as_remote(fn)
        size = chunksize if chunksize > 1 else None
        if wrapped:   # (fn is pickled once per batch: pickle keeps one copy of a repeated object)
            return function.map(itertools.repeat(fn), zip(*iterables), timeout=timeout, chunksize=size,
                                progress=progress)
        return function.map(*iterables, timeout=timeout, chunksize=size, progress=progress)

    def workers(self) -> int:
        """How many workers the cluster has (starting it if it is not up yet)."""
        client = self._own_client if self._own_client is not None else _runtime.client()
        return len(client.dispatcher(self._cluster).connections())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut = True
            pending = list(self._futures)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            cf.wait(pending)
        if self._own_client is not None:
            self._own_client.shutdown()

