"""Timing and statistics shared by every section.

All durations come from :func:`time.perf_counter` in one process. Every loop
here is bounded twice: by a count and by a :class:`Budget` (a wall-clock
deadline), so a slow or stuck contender shortens a run instead of hanging
it; the number of samples actually taken is always recorded.
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from typing import Callable, Iterable, Optional


class Budget:
    """A wall-clock deadline for one measurement loop."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def expired(self) -> bool:
        return time.perf_counter() >= self.deadline


def percentile(sorted_values: list, q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarise(values: Iterable[float], unit: str) -> dict:
    """Median, p99, mean, min, max and count of ``values`` (in ``unit``)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return {"unit": unit, "n": 0, "median": math.nan, "p99": math.nan, "mean": math.nan,
                "min": math.nan, "max": math.nan}
    return {"unit": unit, "n": len(ordered), "median": statistics.median(ordered),
            "p99": percentile(ordered, 99), "mean": statistics.fmean(ordered),
            "min": ordered[0], "max": ordered[-1]}


def rate_summary(counts_and_seconds: list, unit: str) -> dict:
    """Rates (count / seconds) of repeated runs: median is the figure, p99 the best-case tail.

    For a rate, the slow tail is the *low* end, so ``p99`` here is the 1st
    percentile of the rates (the rate exceeded by 99% of the runs).
    """
    rates = sorted(count / seconds for count, seconds in counts_and_seconds if seconds > 0)
    figure = summarise(rates, unit)
    figure["p99"] = percentile(rates, 1) if rates else math.nan
    figure["p99_meaning"] = "rate exceeded by 99% of the repetitions (slow tail)"
    return figure


def time_calls(fn: Callable[[], object], count: int, budget: Budget) -> list:
    """Durations of up to ``count`` sequential calls of ``fn``, one sample per call.

    At least one call is timed even when the budget is spent, so that every
    variant has a figure.
    """
    samples: list = []
    clock = time.perf_counter
    for _ in range(count):
        if samples and budget.expired():
            break
        start = clock()
        fn()
        samples.append(clock() - start)
    return samples


def time_block(fn: Callable[[], object], calls: int) -> float:
    """Mean duration of one call of ``fn`` over ``calls`` back-to-back calls.

    For in-process calls too short to time one by one.
    """
    clock = time.perf_counter
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


class _Window:
    """Keeps ``size`` calls in flight; records each call's latency."""

    def __init__(self, size: int) -> None:
        self.slots = threading.Semaphore(size)
        self.lock = threading.Lock()
        self.latencies: list = []
        self.errors: list = []
        self.finished = 0
        self.all_done = threading.Event()
        self.expected = -1

    def done(self, future, started: float) -> None:
        latency = time.perf_counter() - started
        error = future.exception()
        with self.lock:
            self.latencies.append(latency)
            if error is not None:
                self.errors.append(repr(error))
            self.finished += 1
            if self.finished == self.expected:
                self.all_done.set()
        self.slots.release()


def windowed(start_call: Callable, total: int, in_flight: int, budget: Budget) -> tuple:
    """Run up to ``total`` calls with ``in_flight`` outstanding; return (calls, seconds, latencies)."""
    window = _Window(in_flight)
    clock = time.perf_counter
    began = clock()
    sent = 0
    while sent < total and (sent < in_flight or not budget.expired()):
        window.slots.acquire()
        started = clock()
        start_call().add_done_callback(lambda future, started=started: window.done(future, started))
        sent += 1
    with window.lock:
        window.expected = sent
        if window.finished == sent:
            window.all_done.set()
    if not window.all_done.wait(timeout=max(budget.left(), 0) + 60):
        raise RuntimeError(f"{sent - window.finished} calls never finished")
    elapsed = clock() - began
    if window.errors:
        raise RuntimeError(f"{len(window.errors)} calls failed, first: {window.errors[0]}")
    return sent, elapsed, window.latencies


def interleave(variants: dict, rounds: int, per_round: int, budget: Budget,
               runner: Optional[Callable] = None) -> dict:
    """Per-call samples of several variants measured in alternating rounds.

    Each round times ``per_round`` calls of every variant, rotating which
    goes first, so that drift in the machine's load affects all of them
    alike. ``runner(fn, count, budget)`` returns samples (default:
    :func:`time_calls`). Returns ``{name: [seconds, ...]}``.
    """
    run = runner or time_calls
    names = list(variants)
    samples: dict = {name: [] for name in names}
    for index in range(rounds):
        if index and budget.expired():
            break
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].extend(run(variants[name], per_round, budget))
    return samples


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator
