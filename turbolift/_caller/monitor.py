"""Watching the streams of exchanges in progress: deadlines, and workers that fell silent.

One thread per dispatcher looks at the streams checked out for exchanges
every ``PERIOD``: a stream whose exchange passed its deadline, or that has
been waited on for ``SILENT_SECONDS`` without a frame (a worker sends a
heartbeat every two seconds while a call runs), is cancelled, with the
reason recorded so that the waiting thread raises TimeoutError or treats
the worker as lost. gRPC's own keepalive is not relied on for this: a
stopped worker was noticed by it only after 68 s (grpc/grpc#39239).

Heartbeats need the worker's GIL, so a call inside one long C call that
holds it (a 2 GiB ``bytes`` built at once, a huge ``list.sort``) sends
none. Where the platform can see the worker's process (local workers),
a silent worker that is running is left to finish: only a stopped,
sleeping or vanished one is lost, and only once it has been seen so on
every look for ``CONFIRM_SECONDS``: a running thread can be caught for a
moment in a wait (a lock of the allocator, a page fault).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from .session import Stream

PERIOD = 0.05
SILENT_SECONDS = 10.0
CONFIRM_SECONDS = 1.0
DEADLINE, SILENT = "deadline", "silent"


class Monitor:
    def __init__(self, busy: Optional[Callable[[str], bool]] = None) -> None:
        """``busy(address)``: True when that worker is seen running though silent (see above)."""
        self._busy = busy or (lambda address: False)
        # No lock: set.add/discard and copying the set are atomic in CPython, and
        # these run on every call.
        self._streams: set[Stream] = set()
        self._idle_since: dict[Stream, float] = {}   # silent streams whose worker was last seen idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="turbolift-monitor", daemon=True)
        self._thread.start()

    def watch(self, stream: Stream) -> None:
        self._streams.add(stream)

    def forget(self, stream: Stream) -> None:
        self._streams.discard(stream)
        self._idle_since.pop(stream, None)

    def close(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(PERIOD):
            now = time.monotonic()
            streams = list(self._streams)
            for stream in streams:
                if stream.broken:
                    continue
                if stream.deadline is not None and now >= stream.deadline:
                    stream.cancel(DEADLINE)
                elif stream.waiting and now - stream.last_frame > SILENT_SECONDS:
                    if self._busy(stream.address):
                        self._idle_since.pop(stream, None)
                    elif now - self._idle_since.setdefault(stream, now) >= CONFIRM_SECONDS:
                        stream.cancel(SILENT)
                else:
                    self._idle_since.pop(stream, None)
