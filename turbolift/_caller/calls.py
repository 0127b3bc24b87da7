"""The value objects a call travels as, from the stub through the dispatcher to a connection."""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .bundling import Bundle

# What a reply asks for next (see Dispatcher.next_step).
UPLOAD, FETCH, DONE = "upload", "fetch", "done"

_PID = os.getpid()
_numbers = itertools.count()


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


@dataclass
class Call:
    """One message to send: a call (``Call``) or a batch of calls (``CallBatch``).

    ``request`` is the protobuf request, its function and call id set;
    ``large`` holds an argument payload too large to travel inside it, which
    is uploaded as a blob to whichever worker the call goes to. ``decode``
    turns ``(reply, fetched result blob or None)`` into the value (or raises
    the remote exception). ``what`` names the call in error messages ("a call
    of mod.f"). ``retries`` is how often the call may be sent again after its
    worker was lost.
    """

    method: str
    request: Any
    bundle: Bundle
    decode: Callable[[Any, Optional[bytearray]], Any]
    deadline: Optional[float]
    retries: int
    what: str
    large: Optional[bytes] = None


class WorkEstimate:
    """A running estimate of the seconds one call of a function takes on a worker.

    An exponential moving average over what the workers report, so that it
    follows a function whose cost changes; None until a first observation.
    """

    WEIGHT = 0.3   # of the newest observation

    def __init__(self) -> None:
        self.seconds: Optional[float] = None

    def observe(self, seconds: float, count: int = 1) -> None:
        if count:
            each = seconds / count
            previous = self.seconds
            self.seconds = each if previous is None else (1 - self.WEIGHT) * previous + self.WEIGHT * each
