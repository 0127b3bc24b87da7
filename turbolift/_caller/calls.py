"""The value objects a call travels as, from the stub through the dispatcher to a connection."""
from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .._wire.chunked import Payload
from .bundling import Bundle

_PID = os.getpid()
_numbers = itertools.count()


def _forked() -> None:
    # A forked process (a worker forked by its template, a caller's child) is another process:
    # its ids must not repeat its parent's.
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def new_call_id() -> str:
    """An id unique among this process's calls (``pid-number``), for cancellation and tracing."""
    return f"{_PID}-{next(_numbers)}"


def deadline_after(seconds: Optional[float]) -> Optional[float]:
    """The monotonic deadline ``seconds`` from now (None: no deadline)."""
    return None if seconds is None else time.monotonic() + float(seconds)


def remaining(deadline: Optional[float]) -> Optional[float]:
    """Seconds left until ``deadline`` (never negative), or None for no deadline."""
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.0)


class Handle:
    """What lets a call be cancelled while it runs: the stream it uses now."""

    __slots__ = ("cancelled", "stream", "_lock")

    def __init__(self) -> None:
        self.cancelled = False
        self.stream: Any = None
        self._lock = threading.Lock()

    def attach(self, stream: Any) -> bool:
        """Record the stream an attempt uses; False when the call was cancelled already."""
        with self._lock:
            self.stream = stream
            return not self.cancelled

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            stream = self.stream
        if stream is not None:
            stream.cancel("cancelled")


@dataclass
class Call:
    """One exchange to run: one call (``count`` 0) or a batch of ``count`` calls of one function.

    ``payload`` is the serialised ``(args, kwargs)`` (or list of items);
    ``decode(reply, result bytes)`` turns a RETURNED or RAISED reply into
    the value or raises the remote exception; ``what`` names the call in
    errors ("a call of mod.f") and ``label`` in forwarded output;
    ``extra`` are the bundles the arguments need besides the function's;
    ``streams`` the iterators among the arguments that the worker pulls
    items from (:mod:`turbolift._wire.streamed`), None when there are none.
    """

    ref: Any                       # pb.FunctionRef
    bundle: Bundle
    payload: Payload
    decode: Callable[[Any, bytes], Any]
    deadline: Optional[float]
    retries: int
    what: str
    label: str = ""
    count: int = 0
    with_kwargs: bool = False
    single_arguments: bool = False   # a batch of one-argument calls: its items are the arguments
    extra: tuple = ()
    streams: Optional[dict] = None
    call_id: str = field(default_factory=lambda: new_call_id())
    handle: Handle = field(default_factory=Handle)

    def bundle_named(self, bundle_id: str) -> Optional[Bundle]:
        for bundle in (self.bundle, *self.extra):
            if bundle.id == bundle_id:
                return bundle
        return None


class WorkEstimate:
    """A running estimate of the seconds one call of a function takes on a worker.

    An exponential moving average over what the workers report, one step
    per report (a batch of many calls counts once), so that it follows a
    function whose cost changes within a few calls; None until a first
    observation. (A map sizes its batches with its own estimate, see
    :class:`~.mapping.ItemCost`.)
    """

    WEIGHT = 0.3   # of the newest observation

    def __init__(self) -> None:
        self.seconds: Optional[float] = None

    def observe(self, seconds: float, count: int = 1) -> None:
        if count:
            each = seconds / count
            previous = self.seconds
            self.seconds = each if previous is None else (1 - self.WEIGHT) * previous + self.WEIGHT * each
