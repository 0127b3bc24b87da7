"""Slots for user code, and stopping it when its caller no longer wants the result.

A worker runs at most ``slots`` calls of user code at once; more wait for a
slot. When a call is abandoned (its stream or RPC was cancelled) or its
deadline passes, one watchdog thread raises :class:`CallCancelled` inside
the thread running it, with ``PyThreadState_SetAsyncExc``. The exception
arrives at the next Python bytecode the function runs (a blocking C call
such as ``time.sleep`` finishes first), so CPU-bound loops stop within about
``PERIOD``. Once no user code has run for ``IDLE_SECONDS`` the watchdog
sleeps until some does (an idle worker wakes its process a few times a
second at most: 100 of them on one machine are not a load of their own).

An asynchronous exception must only ever land in user code: landing in a
lock's release or a gRPC internal would wedge the worker. So a thread is
interruptible only between :meth:`Watchdog.run`'s registration and its
withdrawal, both made under the watchdog's lock, and the withdrawal cancels
an exception that was set but not yet delivered. One that is delivered in
the few bytecodes of turbolift between user code and the withdrawal is
caught there (see :meth:`Watchdog.run`). Waiting for a slot, decoding
requests and sending replies happen outside that window.
"""
from __future__ import annotations

import ctypes
import itertools
import threading
import time
from typing import Any, Callable, Optional

from . import forked_call

PERIOD = 0.05
PULSE_SECONDS = 2.0
IDLE_SECONDS = 1.0


def _set_async_exc(thread: int, exception: Any) -> None:
    """Raise ``exception`` in ``thread`` at its next bytecode; None withdraws a pending one.

    No ``argtypes``: ctypes must pass None as NULL (which withdraws), not as
    ``Py_None`` (which would raise SystemError in the thread).
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(exception) if exception is not None else None)


class CallCancelled(BaseException):
    """Raised inside a user function whose call was cancelled or timed out.

    A BaseException, like KeyboardInterrupt, so that ordinary ``except
    Exception`` blocks in user code do not swallow it.
    """


class Ticket:
    """One call as the watchdog sees it.

    ``alive()`` is False once the caller abandoned the call; ``deadline`` is
    a ``time.monotonic()`` time or None; ``pulse`` (optional) is called every
    ``PULSE_SECONDS`` while the call runs, to tell the caller it is alive.
    """

    __slots__ = ("alive", "deadline", "pulse", "interrupted", "holds_slot")

    def __init__(self, alive: Callable[[], bool], deadline: Optional[float] = None,
                 pulse: Optional[Callable[[], None]] = None) -> None:
        self.alive = alive
        self.deadline = deadline
        self.pulse = pulse
        self.interrupted = False
        self.holds_slot = False

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def wanted(self) -> bool:
        return not self.expired() and self.alive()


class Watchdog:
    """The slots of this worker, the calls in user code, and the thread that interrupts them."""

    def __init__(self, slots: int = 16, period: float = PERIOD) -> None:
        self.slots = slots
        self._period = period
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)   # a slot became free
        self._free = slots
        self._running: dict[int, Ticket] = {}   # thread id -> the ticket of the user code it runs
        self._holding = 0                        # calls holding a slot
        self._pulsing: set[Ticket] = set()       # every call whose caller waits (for heartbeats)
        self._user_code = threading.Condition(self._lock)   # user code started while the watchdog slept
        self._watchdog_asleep = False
        self._served = itertools.count(1)
        self.served = 0
        for target, name in ((self._watch, "turbolift-watchdog"), (self._pulse, "turbolift-pulse")):
            threading.Thread(target=target, name=name, daemon=True).start()

    @property
    def running(self) -> int:
        """Calls holding a slot now."""
        return self._holding

    # -- slots -------------------------------------------------------------
    def acquire(self, ticket: Ticket) -> bool:
        """Wait for a free slot; False if the call is abandoned or expires while it waits."""
        with self._lock:
            while self._free == 0:
                self._freed.wait(self._period)
                if self._free == 0 and not ticket.wanted():
                    return False
            self._free -= 1
            self._holding += 1
        ticket.holds_slot = True
        return True

    def release(self, ticket: Ticket) -> None:
        if ticket.holds_slot:
            ticket.holds_slot = False
            with self._lock:
                self._free += 1
                self._holding -= 1
                self._freed.notify()

    def take_back(self, ticket: Ticket) -> None:
        """Wait for a slot for ``ticket`` again after lending it, whatever happened meanwhile
        (the code that holds it releases it when the call ends)."""
        with self._lock:
            while self._free == 0:
                self._freed.wait()
            self._free -= 1
            self._holding += 1
        ticket.holds_slot = True

    def start_pulses(self, ticket: Ticket) -> None:
        """Send ``ticket.pulse`` heartbeats until :meth:`stop_pulses`: while the call waits for a
        slot, runs, or waits on nested calls, its caller hears from the worker every PULSE_SECONDS."""
        with self._lock:
            self._pulsing.add(ticket)

    def stop_pulses(self, ticket: Ticket) -> None:
        with self._lock:
            self._pulsing.discard(ticket)

    def lend(self, ticket: Optional[Ticket]) -> "_Lent":
        """Give ``ticket``'s slot to other calls while its thread waits (on a nested call)."""
        return _Lent(self, ticket)

    # -- user code -----------------------------------------------------------
    def run(self, ticket: Ticket, fn: Callable, *args: Any) -> tuple[bool, Any]:
        """Run ``fn(*args)`` as interruptible user code: ``(True, value)`` or ``(False, exception)``.

        A CallCancelled that arrives after ``fn`` returned, before the
        withdrawal, is caught here like one raised inside ``fn``.
        """
        thread = threading.get_ident()
        try:
            try:
                with self._lock:
                    self._running[thread] = ticket
                    if self._watchdog_asleep:
                        self._user_code.notify()
                try:
                    value = fn(*args)
                except BaseException as exc:
                    if forked_call.forked:   # (before _leave: a lock held at the fork stays held here)
                        forked_call.end_child(exc)
                    raise
                if forked_call.forked:
                    forked_call.end_child(None)
                return True, value
            finally:
                self._leave(thread)
        except BaseException as exc:  # the user's exception, or our CallCancelled
            self._leave(thread)       # idempotent: the one above may not have run
            return False, exc
        finally:
            self.served = next(self._served)

    def _leave(self, thread: int) -> None:
        while True:
            try:
                with self._lock:
                    ticket = self._running.pop(thread, None)
                    if ticket is not None and ticket.interrupted:
                        # Withdraw an exception set but not yet delivered, so it
                        # cannot surface later in code that is not the user's.
                        _set_async_exc(thread, None)
                return
            except CallCancelled:  # delivered inside this method: absorbed, then withdrawn above
                continue

    # -- the watchdog's threads ------------------------------------------------
    def _watch(self) -> None:
        idle_since, served = time.monotonic(), self.served
        while True:
            time.sleep(self._period)
            with self._lock:
                if not self._running:
                    if self.served != served:   # calls ran between two looks: not idle
                        idle_since, served = time.monotonic(), self.served
                    elif time.monotonic() - idle_since >= IDLE_SECONDS:
                        self._watchdog_asleep = True
                        while not self._running:
                            self._user_code.wait()
                        self._watchdog_asleep = False
                        idle_since, served = time.monotonic(), self.served
                    continue
                idle_since = time.monotonic()
                for thread, ticket in list(self._running.items()):
                    if not ticket.interrupted and not ticket.wanted():
                        ticket.interrupted = True
                        _set_async_exc(thread, CallCancelled)

    def _pulse(self) -> None:
        """Heartbeats for callers waiting on long calls (a thread apart: sending may block)."""
        stop = threading.Event()
        while not stop.wait(PULSE_SECONDS):
            with self._lock:
                tickets = [ticket for ticket in self._pulsing if ticket.pulse is not None]
            for ticket in tickets:
                try:
                    ticket.pulse()  # type: ignore[misc]
                except Exception:
                    pass


class _Lent:
    """Context manager: the slot of a waiting call is free for others, then taken back."""

    def __init__(self, watchdog: Watchdog, ticket: Optional[Ticket]) -> None:
        self._watchdog = watchdog
        self._ticket = ticket
        self._lent = False

    def __enter__(self) -> None:
        ticket = self._ticket
        if ticket is not None and ticket.holds_slot:
            self._watchdog.release(ticket)
            self._lent = True

    def __exit__(self, *exc_info: object) -> None:
        if self._lent and self._ticket is not None:
            self._watchdog.take_back(self._ticket)
