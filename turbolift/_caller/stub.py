"""The client stub behind a marked function when distribution is on.

It turns a call into a :class:`~.calls.Call` (the function's bundle and
address, the serialised arguments, deadline and retries) and hands it to
the dispatcher of the function's cluster; it never touches connections.
What it returns has the shape the local call would have: a value, a lazy
iterator for a generator function, a coroutine for an ``async def``
function, an async iterator for an async generator function.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import inspect
import operator
import threading
from typing import Any, Callable, Iterator, Optional

from .. import _runtime
from .._wire import outcomes, serialize, streamed
from ..v1 import worker_pb2 as pb
from .bundling import Target, target_for
from .calls import Call, deadline_after
from .dispatcher import Dispatcher
from .iterators import AsyncRemoteIterator, LazyIterator
from .late_bundles import extra_bundles


class RemoteStub:
    """The client stub behind one marked function (``TurboliftFunction``)."""

    def __init__(self, function: Any, client: Any) -> None:
        self._function = function
        self._client = client              # the turbolift._caller.client.Client that made it
        self._lock = threading.Lock()
        self._resolved: Optional[tuple[Dispatcher, Target, pb.FunctionRef]] = None
        self._parent: Optional[RemoteStub] = None
        self._coalescer: Any = None
        self._what = f"a call of {function.__module__}.{function.__qualname__}"
        self._label = function.__qualname__.rpartition(".")[2]
        real = function.__wrapped__
        real = inspect.unwrap(real) if callable(real) else real
        self._generator = inspect.isgeneratorfunction(real)
        self._coroutine = inspect.iscoroutinefunction(real)
        self._async_generator = inspect.isasyncgenfunction(real)

    def with_function(self, function: Any) -> "RemoteStub":
        """A stub for a copy of the function with other options (same target)."""
        stub = RemoteStub(function, self._client)
        stub._parent = self
        return stub

    def _resolve(self) -> tuple[Dispatcher, Target, pb.FunctionRef]:
        resolved = self._resolved
        if resolved is not None and resolved[1].watched and not resolved[1].is_current():
            resolved = None  # a global it reads was rebound: ship the function anew
        if resolved is None and self._parent is not None:
            resolved = self._resolved = self._parent._resolve()
        if resolved is None:
            with self._lock:
                current = self._resolved
                if current is None or not current[1].is_current():
                    dispatcher = self._client.dispatcher(self._function.cluster)
                    dispatcher.start()
                    # Deadlines cover calls, not the cluster's first start-up.
                    dispatcher.connections()
                    target = target_for(self._function)
                    ref = pb.FunctionRef(bundle_id=target.bundle.id, module=target.module,
                                         qualname=target.qualname)
                    self._resolved = (dispatcher, target, ref)
                resolved = self._resolved
        return resolved

    def timeout(self) -> Optional[float]:
        """The per-call deadline in seconds: the function's own, else the configured default."""
        timeout = self._function.timeout
        return self._client.settings.timeout if timeout is None else timeout

    def retries(self) -> int:
        retries = self._function.retries
        return self._client.settings.retries_or_default if retries is None else retries

    def _call_of(self, target: Target, ref: pb.FunctionRef, args: tuple, kwargs: dict) -> Call:
        modules: set = set()
        streams = streamed.Streams()
        try:
            payload = serialize.dumps_payload((args, kwargs), for_worker=True, what="arguments",
                                              modules=modules, streams=streams, framed=True)
        except TypeError as exc:
            raise self._argument_error(args, kwargs, exc) from None
        return Call(ref, target.bundle, payload, outcomes.value_of, deadline_after(self.timeout()),
                    self.retries(), self._what, self._label, extra=self._extras(target, modules),
                    streams=streams.iterators or None)

    def batch_of(self, target: Target, ref: pb.FunctionRef, items: bytes, count: int,
                 deadline: Optional[float], with_kwargs: bool, modules: Optional[set] = None,
                 single_arguments: bool = False) -> Call:
        """A batch of ``count`` serialised items (``(args, kwargs)`` pairs when ``with_kwargs``, the
        only arguments themselves when ``single_arguments``); ``modules`` are those the items refer to."""
        return Call(ref, target.bundle, items, functools.partial(outcomes.batch_of, count=count), deadline,
                    self.retries(), self._what, self._label, count=count, with_kwargs=with_kwargs,
                    single_arguments=single_arguments, extra=self._extras(target, modules))

    @staticmethod
    def _extras(target: Target, modules: Optional[set]) -> tuple:
        """The bundles of the project modules the arguments refer to that the function's bundle lacks
        (a function of a test module passed as an argument, an instance of another module's class)."""
        return extra_bundles((target.bundle,), modules)

    def _argument_error(self, args: tuple, kwargs: dict, error: TypeError) -> TypeError:
        """Name the argument that cannot travel, its type, and what to pass instead."""
        try:
            names = list(inspect.signature(self._function.__wrapped__).parameters)
        except (TypeError, ValueError):
            names = []
        candidates = [(f"argument {index + 1}" + (f" ({names[index]!r})" if index < len(names) else ""),
                       value) for index, value in enumerate(args)]
        candidates += [(f"argument {key!r}", value) for key, value in kwargs.items()]
        for label, value in candidates:
            try:
                serialize.dumps(((value,), {}), for_worker=True, what=label)
            except TypeError as exc:
                return TypeError(f"{self._what}: {label} cannot be sent: {_reason(exc)}")
        return error

    # -- the entry points of TurboliftFunction ---------------------------------------
    def call(self, args: tuple, kwargs: dict) -> Any:
        if self._generator:
            return LazyIterator(lambda: self._run(args, kwargs))
        if self._async_generator:
            return AsyncRemoteIterator(LazyIterator(lambda: self._run(args, kwargs)))
        if self._coroutine:
            return self._awaitable(args, kwargs)
        return self._run(args, kwargs)

    async def _awaitable(self, args: tuple, kwargs: dict) -> Any:
        return await asyncio.wrap_future(self.submit(args, kwargs))

    def _run(self, args: tuple, kwargs: dict) -> Any:
        _runtime.stop_daemon_thread_at_exit()   # (a daemon thread calling in a loop: stopped here)
        with _runtime.turbolift_code():
            dispatcher, target, ref = self._resolve()
            return dispatcher.call(self._call_of(target, ref, args, kwargs))

    def submit(self, args: tuple, kwargs: dict) -> cf.Future:
        _runtime.stop_daemon_thread_at_exit()   # (nor does one submitting keep the end busy)
        with _runtime.turbolift_code():
            dispatcher, target, ref = self._resolve()
            coalescer = self._coalescer
            if coalescer is None or coalescer.ref is not ref:  # first use, or the function was shipped anew
                from .coalesce import Coalescer

                with self._lock:
                    if self._coalescer is None or self._coalescer.ref is not ref:
                        self._coalescer = Coalescer(dispatcher, target, ref, self)
                coalescer = self._coalescer
            return dispatcher.submitted.keep(coalescer.submit(args, kwargs))

    def submit_one(self, target: Target, ref: pb.FunctionRef, args: tuple, kwargs: dict,
                   observe: Callable[[float], None]) -> cf.Future:
        """Send one call as its own exchange; ``observe`` learns the seconds it took on the worker."""
        dispatcher, _, _ = self._resolve()
        call = self._call_of(target, ref, args, kwargs)

        def decode(reply: pb.Reply, data: Any) -> Any:
            observe(reply.elapsed_seconds)
            return outcomes.value_of(reply, data)

        call.decode = decode
        return dispatcher.submit(call)

    def map(self, iterables: tuple, timeout: Optional[float] = None,
            chunksize: Optional[int] = None) -> Iterator:
        if self._generator or self._async_generator or self._coroutine:
            # Each item's result has the shape of one call's (an iterator, a coroutine), as locally.
            return (self.call(args, {}) for args in zip(*iterables))
        with _runtime.turbolift_code():
            dispatcher, target, ref = self._resolve()
            from .mapping import MapIterator

            single = len(iterables) == 1   # items travel as themselves, not as 1-tuples
            return MapIterator(dispatcher, lambda items, count, deadline, modules: self.batch_of(
                target, ref, items, count, deadline, with_kwargs=False, modules=modules,
                single_arguments=single), _arguments(iterables, single),
                timeout=timeout, chunksize=chunksize, per_item_timeout=self.timeout(), what=self._what,
                single_arguments=single, total=_count(iterables))


def _arguments(iterables: tuple, single: bool) -> Iterator:
    """The argument tuples of a map's calls, or with ``single`` (one iterable) the arguments
    themselves; what is not iterable raises zip's TypeError, as the local map does."""
    if single:
        try:
            return iter(iterables[0])
        except TypeError:
            pass
    return zip(*iterables)


def _count(iterables: tuple) -> Optional[int]:
    """How many items a map over ``iterables`` has, as far as their length hints tell (None: unknown)."""
    try:
        hints = [hint for hint in (operator.length_hint(iterable, -1) for iterable in iterables) if hint >= 0]
    except Exception:   # (a length that fails to answer tells nothing)
        return None
    return min(hints) if hints else None


def _reason(exc: TypeError) -> str:
    """The part of a serialisation error that says why, without who (the caller names that)."""
    text = str(exc)
    if text.startswith(("turbolift cannot send the ", "turbolift cannot serialise the ")):
        text = text.split(": ", 1)[-1]
    return text
