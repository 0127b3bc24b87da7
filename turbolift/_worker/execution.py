"""Running one call, one batch or one step of an iterator, inside a slot and under the watchdog.

Everything that may run user code happens inside the interruptible window
of :meth:`Watchdog.run` and holds a slot: unpickling the arguments (a
``__reduce__`` may do anything), the function itself, and pickling the
result. So ``--threads`` bounds all of it and deadlines interrupt all of it.
What a call ends in is an :class:`Outcome`; the session and the unary
service turn it into frames or messages.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from .._wire import serialize, streamed
from .._wire.outcomes import pack_exception
from . import capture
from .cancel import CallCancelled, Ticket, Watchdog

RETURNED, RAISED, ITERATOR, CANCELLED, INVALID = "returned", "raised", "iterator", "cancelled", "invalid"


@dataclass
class Outcome:
    """How a call ended. ``value``: the serialised result (RETURNED), the packed
    exception (RAISED), the iterator (ITERATOR), a message (INVALID)."""

    kind: str
    value: Any = None
    elapsed: float = 0.0


class BadRequest(Exception):
    """The arguments did not decode into what the request says."""


def _decode_arguments(payload: Any) -> tuple[tuple, dict]:
    try:
        arguments = capture.repeating_imports(serialize.loads, payload)
    except Exception as exc:
        raise BadRequest(f"could not deserialise the arguments: {type(exc).__name__}: {exc}") from None
    # Exact types: a subclass could run code while being checked or unpacked.
    if not (type(arguments) is tuple and len(arguments) == 2
            and type(arguments[0]) is tuple and type(arguments[1]) is dict):
        raise BadRequest("arguments must serialise an (args tuple, kwargs dict) pair")
    return arguments


class _AsyncGeneratorIterator:
    """An async generator driven from a worker thread with an event loop of its own."""

    def __init__(self, agen: Any) -> None:
        self._agen = agen
        self._loop = asyncio.new_event_loop()

    def __iter__(self) -> "_AsyncGeneratorIterator":
        return self

    def __next__(self) -> Any:
        try:
            return self._loop.run_until_complete(self._agen.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._agen.aclose())
        finally:
            self._loop.close()


def _settle_coroutine(value: Any) -> Any:
    """Run what an ``async def`` function returned to its end (as awaiting it would)."""
    if inspect.iscoroutine(value):
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(value)
        finally:
            loop.close()
    return value


def _run_call(function: Callable, payload: Any) -> Any:
    args, kwargs = _decode_arguments(payload)
    del payload
    value = function(*args, **kwargs)
    if inspect.iscoroutine(value):
        value = _settle_coroutine(value)
    if streamed.result_streams(value):
        return _Iterating(value if not inspect.isasyncgen(value) else _AsyncGeneratorIterator(value))
    return serialize.dumps_payload(value, for_worker=False, what="result", framed=True)


class _Iterating:
    """Marks a result that is an iterator (never pickled)."""

    __slots__ = ("iterator",)

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator


def _interruptible(watchdog: Watchdog, ticket: Ticket, events: Optional[capture.Events], fn: Callable,
                   *args: Any) -> Outcome:
    """Run ``fn(*args)`` holding a slot, as user code under the watchdog, with ``events`` routed.

    RETURNED carries what ``fn`` returned (unserialised); CANCELLED when the
    call was abandoned, before or during the run; INVALID for a BadRequest;
    RAISED with the packed exception otherwise.
    """
    if not watchdog.acquire(ticket):
        return Outcome(CANCELLED)
    started = time.perf_counter()
    capture.attach(events)
    try:
        ok, value = watchdog.run(ticket, fn, *args)
    finally:
        capture.detach(events)
        watchdog.release(ticket)
    elapsed = time.perf_counter() - started
    try:
        if ok and not ticket.interrupted:
            return Outcome(RETURNED, value, elapsed)
        if isinstance(value, CallCancelled) or ticket.interrupted:
            return Outcome(CANCELLED, elapsed=elapsed)
        if isinstance(value, BadRequest):
            return Outcome(INVALID, str(value), elapsed)
        return Outcome(RAISED, pack_exception(value), elapsed)
    finally:
        # An exception's traceback reaches this frame (through the frames it
        # passed): holding it here would make a cycle that keeps the call's
        # arguments and results alive until the garbage collector happens to run.
        del value


def call(watchdog: Watchdog, ticket: Ticket, function: Callable, payload: Any,
         events: Optional[capture.Events] = None) -> Outcome:
    """Run ``function`` on the serialised ``(args, kwargs)`` in ``payload``; RETURNED carries the
    serialised result, ITERATOR the iterator it returned."""
    outcome = _interruptible(watchdog, ticket, events, _run_call, function, payload)
    if outcome.kind == RETURNED and isinstance(outcome.value, _Iterating):
        outcome.kind, outcome.value = ITERATOR, outcome.value.iterator
    return outcome


def _run_items(function: Callable, items: Any, with_kwargs: bool,
               single_arguments: bool = False) -> tuple[list, dict]:
    """``(values, errors)``: each item's value in order, and ``{index: packed exception}`` for
    those that raised (their value is None). Items are argument tuples, ``(args, kwargs)``
    pairs when ``with_kwargs``, or the only arguments themselves when ``single_arguments``.

    The common case runs in C (``starmap`` or ``map`` into a list) and
    travels as a plain list (no pair per item to build, pickle and
    unpickle); an exception only costs restarting it after the failing item.

    A ``StopIteration`` the function raises would end ``map`` or ``starmap``
    there, unseen: for a map's items it becomes the RuntimeError the local
    map (a generator) raises; for calls (``with_kwargs``: coalesced submits)
    it stays the StopIteration each call raised.
    """
    if with_kwargs:
        def mapped(rest: Iterator) -> Iterator:
            return map(_apply, itertools.repeat(function), rest)
    elif single_arguments:
        def mapped(rest: Iterator) -> Iterator:
            return map(function, rest)
    else:
        def mapped(rest: Iterator) -> Iterator:
            return itertools.starmap(function, rest)
    if inspect.iscoroutinefunction(function):
        plain = mapped

        def mapped(rest: Iterator) -> Iterator:  # noqa: F811 (each value awaited, as locally)
            return map(_settle_coroutine, plain(rest))
    results: list = []
    errors: dict[int, dict] = {}
    source = iter(items)
    while True:
        try:
            results.extend(mapped(source))
            if len(results) == len(items):
                break
            # Ended early: the function raised StopIteration (its item is consumed).
            errors[len(results)] = pack_exception(RuntimeError("generator raised StopIteration"))
            results.append(None)
        except CallCancelled:
            raise
        except _CallStopped as stopped:
            errors[len(results)] = pack_exception(stopped.exception)
            results.append(None)
        except BaseException as exc:  # one item raised: note it, go on with the rest
            errors[len(results)] = pack_exception(exc)
            results.append(None)
    return results, errors


class _CallStopped(Exception):
    """A call of a batch raised StopIteration (which, raised as is, would end the batch unseen)."""

    def __init__(self, exception: StopIteration) -> None:
        super().__init__()
        self.exception = exception


def _apply(function: Callable, call: tuple) -> Any:
    """``function(*args, **kwargs)`` for a batch's ``(args, kwargs)`` call."""
    args, kwargs = call
    try:
        return function(*args, **kwargs)
    except StopIteration as exc:
        raise _CallStopped(exc) from None


def _encode_items(outcomes: tuple[list, dict]) -> serialize.Payload:
    try:
        return serialize.dumps_payload(outcomes, for_worker=False, what="results", framed=True)
    except TypeError:  # replace the results that cannot travel with the error that says so
        values, errors = outcomes
        for index, value in enumerate(values):
            if index not in errors:
                try:
                    serialize.dumps(value, for_worker=False, what="result")
                except TypeError as exc:
                    values[index], errors[index] = None, pack_exception(exc)
        return serialize.dumps_payload((values, errors), for_worker=False, what="results", framed=True)


def _run_batch(function: Callable, payload: Any, count: int, with_kwargs: bool,
               single_arguments: bool) -> serialize.Payload:
    try:
        items = capture.repeating_imports(serialize.loads, payload)
    except Exception as exc:
        raise BadRequest(f"could not deserialise the batch items: {type(exc).__name__}: {exc}") from None
    del payload
    if single_arguments:
        if type(items) is not tuple or len(items) != count:
            raise BadRequest(f"the items of a batch of one-argument calls must serialise a tuple of {count} "
                             "arguments")
    elif type(items) is not list or len(items) != count:
        raise BadRequest(f"batch items must serialise a list of {count} argument tuples")
    # An item that is not an argument tuple (or pair) fails as that item's own outcome.
    return _encode_items(_run_items(function, items, with_kwargs, single_arguments))


def batch(watchdog: Watchdog, ticket: Ticket, function: Callable, payload: Any, count: int,
          with_kwargs: bool, events: Optional[capture.Events] = None, single_arguments: bool = False,
          ) -> Outcome:
    """Run ``count`` calls of ``function``; RETURNED carries the serialised
    ``(values, {index: packed exception})`` (see :func:`_run_items`)."""
    return _interruptible(watchdog, ticket, events, _run_batch, function, payload, count, with_kwargs,
                          single_arguments)


_DONE = object()


def _next_items(iterator: Any, count: int, batch_seconds: float) -> tuple[list, Any]:
    """Up to ``count`` serialised items, and _DONE when the iterator ended.

    Items produced within ``batch_seconds`` share one frame; a slow
    iterator's items each leave as soon as they exist.
    """
    items: list = []
    started = time.monotonic()
    for _ in range(count):
        try:
            value = next(iterator)
            # Detached: the generator runs again before this item is sent, and may reuse its buffer.
            items.append(serialize.detached(serialize.dumps_payload(value, for_worker=False, what="item")))
        except StopIteration:
            return items, _DONE
        except CallCancelled:
            raise
        except BaseException as exc:  # the items before it still reach the caller, first
            return items, Outcome(RAISED, pack_exception(exc))
        if time.monotonic() - started > batch_seconds:
            break
    return items, None


def step(watchdog: Watchdog, ticket: Ticket, iterator: Any, count: int,
         events: Optional[capture.Events] = None, batch_seconds: float = 0.0,
         ) -> tuple[list, Optional[Outcome]]:
    """The next items (``count`` at most); the Outcome is set when the iterator ended
    (RETURNED), raised (RAISED, after the items before it) or was cancelled."""
    outcome = _interruptible(watchdog, ticket, events, _next_items, iterator, count, batch_seconds)
    if outcome.kind != RETURNED:   # CANCELLED or RAISED (nothing here raises BadRequest)
        return [], outcome
    collected, end = outcome.value
    return collected, (Outcome(RETURNED) if end is _DONE else end)


def close_iterator(watchdog: Watchdog, iterator: Any, events: Optional[capture.Events] = None) -> None:
    """Close the iterator: a generator's ``finally`` runs here, as user code, even when
    its caller went away (bounded by a minute)."""
    close = getattr(iterator, "close", None)
    if close is None:
        return
    closing = Ticket(lambda: True, deadline=time.monotonic() + 60.0)
    if not watchdog.acquire(closing):
        return
    capture.attach(events)
    try:
        watchdog.run(closing, close)
    finally:
        capture.detach(events)
        watchdog.release(closing)
