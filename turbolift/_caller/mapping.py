"""Remote ``map``: ordered results, computed in batches as they are consumed."""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Iterator, Optional

from .._wire import outcomes, serialize
from .calls import Call, remaining
from .dispatcher import Dispatcher


class ItemCost:
    """The seconds one item of a map takes on a worker, from what its batches took.

    Decayed sums of the seconds and of the items the workers report: a
    batch weighs as many items as it holds, so the first batches of one or
    two items (mostly a batch's fixed cost) do not keep the estimate, and so
    the sizes after them, far too small. None until a first batch returned.
    """

    DECAY = 0.7   # of the earlier batches' weight, at each new one

    def __init__(self) -> None:
        self.seconds: Optional[float] = None
        self._seconds = 0.0
        self._items = 0.0

    def observe(self, seconds: float, count: int) -> None:
        if count:
            self._seconds = self.DECAY * self._seconds + seconds
            self._items = self.DECAY * self._items + count
            self.seconds = self._seconds / self._items


class _Batches:
    """The batches of a remote ``map``: sent ahead of consumption, taken in order.

    At most ``2 * workers`` batches are in flight, and at most twice as many
    finished batches wait to be consumed: a batch that finishes early frees
    its worker for the next one even while an earlier batch (whose results
    come first) is still running elsewhere. Without an explicit
    ``chunksize`` the batch size starts at 1, doubles while nothing is known,
    then aims at batches of about ``TARGET_BATCH_SECONDS`` of work (80 ms) as
    measured by the workers, so that short functions travel in large batches
    and long ones stay spread over every worker. When the items' number is
    known (``total``), batches shrink towards the end (each at most its share
    of what is left, down to ``MIN_BATCH_SECONDS`` of work), so the workers
    finish together instead of one running the last large batch alone.
    """

    TARGET_BATCH_SECONDS = 0.08
    # Only functions of under 0.6 us per item reach it (80 ms of work per batch is the aim): a batch of
    # 8,192 items held a 200,000-item map of `x + 1` to 1.15M items/s, 131,072 items to 1.45M/s.
    MAX_CHUNK = 131_072
    MAX_BATCH_BYTES = 2 * 1024 * 1024   # of arguments or of results per batch
    MIN_BATCH_SECONDS = 0.01             # of work: batches shrink no further towards the end

    def __init__(self, dispatcher: Dispatcher, batch_of: Callable[[bytes, int, Optional[float], set], Call],
                 items: Iterator, *, timeout: Optional[float], chunksize: Optional[int],
                 per_item_timeout: Optional[float], what: str, single_arguments: bool = False,
                 total: Optional[int] = None) -> None:
        """``batch_of(items, count, deadline, modules)`` makes the batch of ``count`` serialised items;
        ``items`` are argument tuples, or with ``single_arguments`` each call's only argument;
        ``total`` is how many there are, when known (a hint: only batch sizes depend on it)."""
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        self._dispatcher = dispatcher
        self._batch_of = batch_of
        self._items = items
        self._single = single_arguments
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._per_item_timeout = per_item_timeout   # the function's own deadline, for each item
        self._bytes_per_item: Optional[float] = None
        self._fixed = chunksize
        self._size = 1
        self._left = total        # items not yet sent, when known
        self._cost = ItemCost()
        self._what = what
        self._pending: deque = deque()
        self._exhausted = False
        self._failure: Optional[BaseException] = None   # raised after the batches before it (see _fill)
        self._lock = threading.Lock()
        self._in_flight = 0                 # batches sent and not finished
        self._finished = threading.Event()  # a batch finished since next_batch last looked
        self._max_running = max(4, 2 * len(dispatcher.connections()))
        self._max_buffered = 2 * self._max_running
        try:
            self._fill()
        except BaseException:   # (a Ctrl-C while drawing the first items): no batch left running
            self.close()
            raise

    def _next_size(self) -> int:
        if self._fixed is not None:
            return self._fixed
        per_item = self._cost.seconds
        if per_item is None:
            size, self._size = self._size, min(self._size * 2, self.MAX_CHUNK)
        else:
            size = max(1, min(self.MAX_CHUNK, int(self.TARGET_BATCH_SECONDS / max(per_item, 1e-7))))
        if self._left is not None:  # at most a share of what is left, for an even finish
            share = -(-self._left // self._max_running)
            least = 1 if per_item is None else int(self.MIN_BATCH_SECONDS / max(per_item, 1e-7))
            size = max(1, min(size, max(share, least)))
        if self._bytes_per_item:  # and small enough to travel as one ordinary message
            size = max(1, min(size, int(self.MAX_BATCH_BYTES / self._bytes_per_item)))
        return size

    def _fill(self) -> None:
        """Send batches while fewer than the limits are running or waiting.

        What goes wrong while drawing or sending them (the input iterator
        raised, an item cannot travel, the cluster is gone) is kept, and
        raised once the results of the items before it were taken, as the
        local map raises it there.
        """
        with self._lock:
            running = self._in_flight
        while (not self._exhausted and running < self._max_running
               and len(self._pending) < self._max_buffered):
            running += 1
            size = self._next_size()
            batch: list = []
            try:
                batch.extend(itertools.islice(self._items, size))   # (what was drawn stays if it raises)
            except KeyboardInterrupt:
                raise      # (most likely a Ctrl-C: now, not after the results before it)
            except BaseException as exc:   # raised after the results of what was drawn before it
                self._failure, self._exhausted = exc, True
            if len(batch) < size:   # the input ended (even one that would go on after a StopIteration)
                self._exhausted = True
            self._send_what_travels(batch)

    def _encoded(self, batch: list) -> tuple:
        """``(payload, modules)`` of ``batch``; raises what pickling an item raised."""
        modules: set = set()
        # Detached: the input iterator runs again before this batch is sent, and may reuse a buffer.
        payload = serialize.detached(serialize.dumps_payload(
            self._shaped(batch), for_worker=True, what="map items", modules=modules, framed=True))
        return payload, modules

    def _submit(self, batch: list, payload: Any, modules: set) -> None:
        self._note_bytes(len(payload), len(batch))
        deadline = None
        if self._per_item_timeout is not None:  # each item keeps the deadline a call of it would have
            deadline = time.monotonic() + self._per_item_timeout * len(batch)
        try:
            future = self._dispatcher.submit(self._batch_of(payload, len(batch), deadline, modules))
        except Exception as exc:   # the cluster is gone: what the consumer hears after the results before
            self._failure, self._exhausted = exc, True
            return
        with self._lock:
            self._in_flight += 1
        self._pending.append((future, len(batch)))
        future.add_done_callback(self._finished_one)
        if self._left is not None:
            self._left -= len(batch)
            if self._left <= 0:   # (more than the hint said: sizes no longer guided by it)
                self._left = None

    def _send_what_travels(self, batch: list) -> None:
        """Send ``batch``; when an item of it cannot travel, send those before it and stop drawing:
        that item's error (a TypeError, or what its ``__reduce__`` raised) is raised after their
        results, before any failure of the input after it."""
        if not batch:
            return
        try:
            encoded = self._encoded(batch)
        except Exception as exc:
            # The first item that cannot travel: the shortest prefix that fails, by bisection
            # (pickling items one by one would ship a class defined in __main__ once per item).
            low, high, error = 0, len(batch), exc     # batch[:low] travels, batch[:high] does not
            while high - low > 1:
                middle = (low + high) // 2
                try:
                    self._encoded(batch[:middle])
                    low = middle
                except Exception as shorter:
                    high, error = middle, shorter
            self._failure, self._exhausted, batch = error, True, batch[:low]
            if not batch:
                return
            try:
                encoded = self._encoded(batch)
            except Exception as again:   # (it travelled a moment ago: a value that changed meanwhile)
                self._failure = again
                return
        self._submit(batch, *encoded)

    def _shaped(self, batch: list) -> Any:
        """The batch as it travels: one-argument calls as a tuple of the arguments (see
        Invoke.single_arguments), others as a list of argument tuples."""
        return tuple(batch) if self._single else batch

    def _note_bytes(self, size: int, count: int) -> None:
        each = size / max(count, 1)
        self._bytes_per_item = max(each, self._bytes_per_item or 0.0)

    def _finished_one(self, future: cf.Future) -> None:
        """A batch finished (in the thread that ran it): learn the workers' time per item from it,
        and wake :meth:`next_batch` to send the next one."""
        try:
            if not future.cancelled() and future.exception() is None:
                values, _, elapsed, reply_bytes = future.result()
                if values:
                    self._note_bytes(reply_bytes, len(values))
                    self._cost.observe(elapsed, len(values))
        finally:
            with self._lock:
                self._in_flight -= 1
            self._finished.set()

    def next_batch(self) -> Optional[tuple[list, dict]]:
        """The values and errors of the first batch in flight once it is done (others are sent
        meanwhile); None when every batch was taken; what went wrong drawing or sending the
        items after them (see :meth:`_fill`) once every batch before was taken."""
        if not self._pending:
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure
            return None
        future, _ = self._pending[0]
        try:
            while not future.done():  # refill as other batches finish meanwhile
                left = remaining(self._deadline)
                if left == 0:
                    raise cf.TimeoutError()
                self._finished.wait(left)
                self._finished.clear()   # (before refilling: a batch that ends meanwhile sets it again)
                self._fill()
            self._pending.popleft()
            values, errors, _, _ = future.result()
        except cf.TimeoutError:
            raise TimeoutError(f"map over {self._what[2:]} did not finish before its timeout") from None
        self._fill()
        return values, errors

    def close(self) -> None:
        """Cancel the batches not yet consumed (and forget a failure not raised: its traceback holds
        the frames that made the map)."""
        self._exhausted = True
        self._failure = None
        while self._pending:
            future, _ = self._pending.popleft()
            future.cancel()


def _values(batches: _Batches) -> Iterator:
    """Each batch's values in order, from C (``yield from``); the exception of the first item
    that raised, at its place.

    A generator, not an ``itertools.chain`` of the batches (which runs no
    frame per item): two threads drawing from one map then behave as with
    one generator, where a chain that meets "generator already executing"
    drops its source and ends the other thread's loop without an error.
    """
    try:
        while True:
            batch = batches.next_batch()
            if batch is None:
                return
            values, errors = batch
            if not errors:
                yield from values
                continue
            first = min(errors)
            yield from values[:first]
            raise outcomes.raised(errors[first])
    finally:
        batches.close()


def _close_if_alive(batches: "weakref.ref[_Batches]") -> None:
    alive = batches()
    if alive is not None:
        alive.close()


class MapIterator:
    """Ordered results of a remote ``map``, computed in batches as consumed (see :class:`_Batches`).

    A ``for`` loop over it runs the generator of :func:`_values`, which
    costs no Python call per item; ``next()`` draws from the same
    generator. The batches not yet consumed are cancelled by :meth:`close`
    or once that generator is gone, not when this object is: a ``for``
    loop over ``f.map(...)`` keeps only the generator.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._batches = _Batches(*args, **kwargs)
        self._results = _values(self._batches)
        # (A generator never started runs no finally.) The finalizer holds the batches weakly: a failure
        # kept for later holds, through its traceback, the frames that made this map, so a strong
        # reference would keep the generator alive for ever.
        finalizer = weakref.finalize(self._results, _close_if_alive, weakref.ref(self._batches))
        # Not at the exit: finalize's own exit hook runs before the program's exit handlers, which may
        # still read this map (the clusters' stop, after them, cancels what is left).
        finalizer.atexit = False

    def __iter__(self) -> Iterator:
        return self._results

    def __next__(self) -> Any:
        return next(self._results)

    def close(self) -> None:
        self._results.close()
        self._batches.close()
