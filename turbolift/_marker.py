"""``turbolift.on``: mark a function for distribution.

The marker holds no transport code. At decoration time it asks the runtime
whether distribution is on; if so the function is bound to a client stub,
otherwise every entry point runs the function in-process with the same
results.
"""
from __future__ import annotations

import concurrent.futures
import functools
import inspect
import itertools
import sys
from typing import Any, Callable, Iterable, Iterator, Optional

from . import _runtime
from . import progress as progress_bar
from ._wire.by_value import travels_by_value
from .errors import raised_on_worker
from .platforms.base import Cluster


class TurboliftFunction:
    """A marked function: call it as before, or use ``submit``/``map``/``aio``.

    The wrapper keeps the function's name, signature (via ``__wrapped__``)
    and docstring.
    """

    def __init__(self, fn: Callable, cluster: Any = None, *, timeout: Optional[float] = None,
                 retries: Optional[int] = None, address: Optional[tuple[str, str]] = None) -> None:
        """``address`` (module, qualified name) is where a worker finds ``fn`` when that is not
        ``fn``'s own ``__module__`` and ``__qualname__``: a bound method or a callable instance
        named with ``--remote MODULE:NAME`` is found under the name it was given."""
        if not callable(fn):
            raise TypeError(f"turbolift.on expects a function, got {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        if address is not None:
            self.__module__, self.__qualname__ = address
            self.__name__ = address[1].rpartition(".")[2]
        self._fn = fn
        self.cluster = cluster
        self.timeout = timeout
        self.retries = retries
        self._remote = _runtime.bind(self)

    # -- calling -----------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        remote = self._remote
        if remote is None or _runtime.runs_in_place() or _called_by_turbolift():
            return self._fn(*args, **kwargs)  # turbolift's own use of it (json.dumps ...) runs in place
        try:
            return remote.call(args, kwargs)
        except BaseException as exc:
            if not (raised_on_worker(exc) or isinstance(exc, KeyboardInterrupt)):
                raise
            raised_remotely = exc
        # The function's own exception, or a Ctrl-C that stopped the wait for it: its
        # traceback starts here (a remote one is among its causes), not in a dozen
        # frames of turbolift's, gRPC's and threading's.
        raise raised_remotely.with_traceback(None)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in this process, whatever the mode."""
        return self._fn(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Start a call; return a :class:`concurrent.futures.Future` of its result.

        In local mode the call runs at once in this process and the future is
        returned already done (its exception, if any, is stored in it; a
        Ctrl-C meanwhile is not: it stops the program, as it would stop a
        program whose executor ran the call in another thread).
        """
        remote = self._remote
        if remote is not None and not _runtime.runs_in_place():
            return remote.submit(args, kwargs)
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(self._fn(*args, **kwargs))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # stored, as an executor would
            future.set_exception(exc)
        return future

    def map(self, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: Optional[int] = None, progress: progress_bar.Progress = None) -> Iterator:
        """Like :meth:`concurrent.futures.Executor.map`.

        Results come in input order and are computed as the iterator is
        consumed; remotely, items are sent in batches (``chunksize`` items,
        chosen adaptively when None) with a bounded number of batches in
        flight. ``timeout`` bounds the wait for each result from the start
        of the call to ``map``. ``progress=True`` shows a progress bar on
        stderr when it is a terminal (``"always"``: even when it is not;
        None: as ``$TURBOLIFT_PROGRESS`` says), see :mod:`turbolift.progress`.
        """
        remote = self._remote
        if remote is not None and not _runtime.runs_in_place():
            results = remote.map(iterables, timeout=timeout, chunksize=chunksize)
        else:
            results = _local_map(self._fn, iterables)
        if not progress_bar.wanted(progress):
            return results
        return progress_bar.track(results, progress_bar.total_of(iterables), f"{self.__qualname__}.map")

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        """Await the call from asynchronous code (an ``async def`` function is awaited too)."""
        remote = self._remote
        if remote is None or _runtime.runs_in_place():
            value = self._fn(*args, **kwargs)
            return (await value) if inspect.isawaitable(value) else value
        import asyncio  # here, not at import: local mode stays light

        return await asyncio.wrap_future(remote.submit(args, kwargs))

    def options(self, *, timeout: Optional[float] = None, retries: Optional[int] = None,
                cluster: Any = None) -> "TurboliftFunction":
        """The same function with other per-call settings, e.g. ``f.options(timeout=5)(x)``.

        Settings left as None keep this function's own.
        """
        copy = TurboliftFunction.__new__(TurboliftFunction)
        copy.__dict__.update(self.__dict__)
        copy.timeout = self.timeout if timeout is None else timeout
        copy.retries = self.retries if retries is None else retries
        if cluster is not None:
            copy.cluster = cluster
            copy._remote = _runtime.bind(copy)
        elif self._remote is not None:
            copy._remote = self._remote.with_function(copy)
        return copy

    def bound_through(self, client: Any) -> "TurboliftFunction":
        """The same function, its calls sent through ``client`` (a caller side) whatever the mode:
        how :class:`turbolift.Executor` distributes in a plain ``python`` process."""
        copy = TurboliftFunction.__new__(TurboliftFunction)
        copy.__dict__.update(self.__dict__)
        # (Not in a forked child: it runs marked functions in place, and binding would import gRPC.)
        copy._remote = None if _runtime.in_forked_child() else client.bind(copy)
        return copy

    # -- methods, pickling, display -----------------------------------------
    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return _BoundMethod(self, instance)

    def __reduce__(self) -> Any:
        # By reference when importable, so a worker finds the very function;
        # by value (through the serializer's dill path) for __main__ and locals.
        if travels_by_value(self.__module__, self.__qualname__):
            return _rebuild, (self._fn, self.timeout, self.retries)
        return self.__qualname__

    def __repr__(self) -> str:
        where = "remote" if self._remote is not None else "local"
        return f"<turbolift function {self.__module__}.{self.__qualname__} ({where})>"


class _BoundMethod:
    """A marked method bound to an instance (``obj.method``)."""

    def __init__(self, function: TurboliftFunction, instance: Any) -> None:
        self._function = function
        self._instance = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(self._instance, *args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        return self._function.submit(self._instance, *args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return self._function.local(self._instance, *args, **kwargs)

    def map(self, *iterables: Iterable, **options: Any) -> Iterator:
        return self._function.map(itertools.repeat(self._instance), *iterables, **options)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return await self._function.aio(self._instance, *args, **kwargs)


def _local_map(fn: Callable, iterables: tuple) -> Iterator:
    """``map`` as the remote one behaves: what is not iterable raises at once (as the builtin
    ``map`` and ``Executor.map`` do), and after an item raises, the iterator is done."""
    arguments = zip(*iterables)
    return (fn(*args) for args in arguments)


def _called_by_turbolift() -> bool:
    """True when the caller of the marked function is a module of turbolift itself
    (frames of this module, a bound method's call, are looked through)."""
    frame = sys._getframe(2)
    for _ in range(3):
        name = frame.f_globals.get("__name__", "")
        if name != __name__:
            return name.startswith("turbolift.")
        frame = frame.f_back
        if frame is None:
            break
    return False


def _rebuild(fn: Callable, timeout: Optional[float], retries: Optional[int]) -> TurboliftFunction:
    return TurboliftFunction(fn, timeout=timeout, retries=retries)


def on(cluster: Any = None, *, timeout: Optional[float] = None,
       retries: Optional[int] = None) -> Any:
    """Mark a function to run on workers when distribution is on.

    Usable as ``@on``, ``@on()``, ``@on(cluster)``. ``cluster`` is a cluster
    object (``LocalQueue(workers=4)``, ``Workers("h:p", ...)``) or a URL
    (``"local"``, ``"local:4"``, ``"grpc://h1:p1,h2:p2"``); None means the
    cluster chosen on the command line or in configuration (by default the
    local one). ``timeout`` is the per-call deadline in seconds; ``retries``
    how often a call whose worker died is tried on another worker.
    """
    if callable(cluster) and not isinstance(cluster, Cluster):
        return TurboliftFunction(cluster, timeout=timeout, retries=retries)

    def mark(fn: Callable) -> TurboliftFunction:
        return TurboliftFunction(fn, cluster, timeout=timeout, retries=retries)

    return mark
