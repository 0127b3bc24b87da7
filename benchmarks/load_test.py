"""Load while a worker dies: many calls, a fixed number in flight, one worker SIGKILLed partway.

``python -m benchmarks.load_test [--calls N] [--in-flight K] [--workers W] [--kill-at F | --no-kill]
[--time-limit S] [--out FILE]``

Runs ``square(i)`` for i in 0..N-1 over ``LocalQueue(workers=W)`` with K
calls in flight (a window: a new call is submitted as soon as one
finishes), and SIGKILLs one worker once a fraction F of the calls have
completed. Submission stops at N calls or after S seconds, whichever comes
first; waiting for the calls in flight is bounded too.

It checks that every call returned its correct result exactly once: each
result names its input (``(i, i*i, pid)``), is delivered once to the
future of call i, and none is missing or wrong. It measures calls/s,
latency (p50, p99, max, from submit to result), retries, and the peak RSS
(VmHWM from /proc) of every worker, read before the worker exits.

Retries are the dispatcher's own count (``Dispatcher.retries``): attempts
sent again to another worker because theirs was lost.

The figures are printed as JSON on stdout (and written to ``--out``); the
exit code is 0 only when every call was correct. ``tests/test_load.py``
runs the same code with the same 20,000 calls.

This module is shipped to the workers (``square`` runs there), so at
module level it imports only the standard library and turbolift.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable, Optional

CALLS = 20_000
IN_FLIGHT = 64
WORKERS = 2
KILL_AT = 0.3
TIME_LIMIT = 120.0
DRAIN_TIMEOUT = 60.0
MODULE = "benchmarks.load_test"


def square(i: int) -> tuple:
    """The workload: its result names its input and the worker process that computed it."""
    return i, i * i, os.getpid()


def peak_rss(pid: int) -> Optional[int]:
    """VmHWM (peak resident set) of ``pid`` in bytes, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def percentile(ordered: list, fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, int(round(fraction * len(ordered) + 0.5)))
    return ordered[min(rank, len(ordered)) - 1]


class Ledger:
    """What came back for each call index, how often, and how long it took."""

    def __init__(self, calls: int, in_flight: int) -> None:
        self.slots = threading.Semaphore(in_flight)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.values: list = [None] * calls
        self.deliveries = [0] * calls
        self.latencies = [0.0] * calls
        self.errors: dict = {}
        self.completed = 0

    def record(self, index: int, started: float, future: Any) -> None:
        latency = time.perf_counter() - started
        error = future.exception()
        with self.lock:
            self.deliveries[index] += 1
            self.latencies[index] = latency
            if error is not None:
                self.errors[index] = f"{type(error).__name__}: {error}"
            else:
                self.values[index] = future.result()
            self.completed += 1
            self.changed.notify_all()
        self.slots.release()

    def wait_completed(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.completed >= count, timeout=timeout)


def _worker_pids(queue: Any) -> list:
    return list(queue.local_pids())


def run(calls: int = CALLS, in_flight: int = IN_FLIGHT, workers: int = WORKERS,
        kill_at: Optional[float] = KILL_AT, time_limit: float = TIME_LIMIT,
        drain_timeout: float = DRAIN_TIMEOUT, cache_dir: Optional[str] = None,
        log: Callable[[str], None] = lambda message: None) -> dict:
    """Run the load test; return its figures and its verdict (``figures["correct"]``)."""
    from turbolift import LocalQueue, _runtime, on
    from turbolift._enabling import switch

    # Under `python -m benchmarks.load_test` this file is __main__; import it by
    # name so that the workers receive `benchmarks.load_test` as a module.
    module = importlib.import_module(MODULE)
    own_cache = cache_dir is None
    cache = cache_dir or tempfile.mkdtemp(prefix="turbolift-load-")
    queue = LocalQueue(workers=workers, cache_dir=str(cache))
    client = switch.enable(queue)
    try:
        remote = on(queue)(module.square)
        dispatcher = client.dispatcher(queue)
        warm = [remote.submit(-1 - n) for n in range(4 * workers)]  # start workers, upload the bundle
        for future in warm:
            future.result(timeout=120)
        first_pids = _worker_pids(queue)
        log(f"{workers} workers ready: {first_pids}")

        ledger = Ledger(calls, in_flight)
        index_of: dict = {}
        kill_after = None if kill_at is None else int(calls * kill_at)
        victim: Optional[int] = None
        kill_info: dict = {}
        peaks: dict = {}
        began = time.perf_counter()
        deadline = time.monotonic() + time_limit
        submitted = 0
        in_flight_sum = in_flight_max = 0
        while submitted < calls:
            if victim is None and kill_after is not None and ledger.completed >= kill_after:
                for pid in _worker_pids(queue):
                    peaks[pid] = peak_rss(pid)
                victim = first_pids[0]
                with ledger.lock:
                    kill_info = {"pid": victim, "after_completed": ledger.completed,
                                 "in_flight_at_kill": submitted - ledger.completed,
                                 "at_s": round(time.perf_counter() - began, 3)}
                os.kill(victim, signal.SIGKILL)
                log(f"killed worker {victim} after {kill_info['after_completed']} calls")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not ledger.slots.acquire(timeout=remaining):
                break
            outstanding = submitted - ledger.completed + 1  # calls in flight once this one is sent
            in_flight_sum += outstanding
            in_flight_max = max(in_flight_max, outstanding)
            started = time.perf_counter()
            future = remote.submit(submitted)
            index_of[id(future)] = submitted
            future.add_done_callback(lambda done, i=submitted, t=started: ledger.record(i, t, done))
            submitted += 1
        time_limited = submitted < calls
        drained = ledger.wait_completed(submitted, drain_timeout)
        elapsed = time.perf_counter() - began
        final_pids = _worker_pids(queue)
        for pid in final_pids:
            peaks[pid] = peak_rss(pid)
    finally:
        _runtime.disable()
        if own_cache:
            shutil.rmtree(cache, ignore_errors=True)

    with ledger.lock:
        values = list(ledger.values)
        deliveries = list(ledger.deliveries)
        latencies = sorted(ledger.latencies[i] for i in range(submitted) if deliveries[i])
        errors = dict(ledger.errors)
        completed = ledger.completed
    missing = [i for i in range(submitted) if deliveries[i] == 0]
    duplicated = [i for i in range(submitted) if deliveries[i] > 1]
    wrong = [i for i in range(submitted) if deliveries[i] and i not in errors
             and not (isinstance(values[i], tuple) and len(values[i]) == 3
                      and values[i][:2] == (i, i * i) and isinstance(values[i][2], int))]
    wrong_set = set(wrong)
    good = [i for i in range(submitted) if deliveries[i] and i not in errors and i not in wrong_set]
    served_by = Counter(values[i][2] for i in good)
    if victim is not None:
        kill_info["served_by_victim"] = served_by.get(victim, 0)
        kill_info["replaced"] = victim not in final_pids and len(final_pids) == workers
    correct = (not time_limited and drained and completed == calls and not missing and not duplicated
               and not wrong and not errors
               and (kill_after is None or bool(kill_info.get("pid"))))
    mib = 1024 * 1024
    return {
        "benchmark": "load_test",
        "correct": correct,
        "calls": calls,
        "submitted": submitted,
        "completed": completed,
        "in_flight": in_flight,
        "in_flight_seen": {"mean": round(in_flight_sum / submitted, 1) if submitted else None,
                           "max": in_flight_max},
        "workers": workers,
        "time_limit_s": time_limit,
        "time_limited": time_limited,
        "drained": drained,
        "elapsed_s": round(elapsed, 3),
        "calls_per_s": round(completed / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {"p50": round(percentile(latencies, 0.50) * 1000, 3),
                       "p99": round(percentile(latencies, 0.99) * 1000, 3),
                       "max": round(latencies[-1] * 1000, 3) if latencies else None},
        "retries": dispatcher.retries,
        "kill": kill_info or None,
        "worker_pids": {"initial": first_pids, "final": final_pids},
        "served_by": {str(pid): count for pid, count in sorted(served_by.items())},
        "peak_rss_mib": {"max": round(max((v for v in peaks.values() if v), default=0) / mib, 1),
                         "by_pid": {str(pid): v and round(v / mib, 1) for pid, v in peaks.items()}},
        "missing": {"count": len(missing), "first": missing[:10]},
        "duplicated": {"count": len(duplicated), "first": duplicated[:10]},
        "wrong": {"count": len(wrong), "first": [(i, values[i]) for i in wrong[:10]]},
        "errors": {"count": len(errors), "first": sorted(errors.items())[:5]},
    }


def summary(figures: dict) -> str:
    """One line for humans."""
    kill = figures["kill"]
    killed = (f"worker {kill['pid']} killed after {kill['after_completed']:,} calls" if kill
              else "no worker killed")
    return (f"load test: {figures['completed']:,}/{figures['calls']:,} calls "
            f"{'correct' if figures['correct'] else 'NOT correct'} in {figures['elapsed_s']:.1f} s, "
            f"{figures['calls_per_s']:,.0f} calls/s, p50 {figures['latency_ms']['p50']:.1f} ms, "
            f"p99 {figures['latency_ms']['p99']:.1f} ms, retries {figures['retries']}, {killed}, "
            f"peak worker RSS {figures['peak_rss_mib']['max']} MiB")


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_test",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--kill-at", type=float, default=KILL_AT,
                        help="kill a worker once this fraction of the calls completed (default 0.3)")
    parser.add_argument("--no-kill", action="store_true", help="kill no worker (a baseline)")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT,
                        help="stop submitting after this many seconds (default 120)")
    parser.add_argument("--out", help="also write the JSON figures to this file")
    opts = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    figures = run(calls=opts.calls, in_flight=opts.in_flight, workers=opts.workers,
                  kill_at=None if opts.no_kill else opts.kill_at, time_limit=opts.time_limit, log=log)
    text = json.dumps(figures, indent=1)
    print(text)
    if opts.out:
        with open(opts.out, "w") as handle:
            handle.write(text + "\n")
    log(summary(figures))
    return 0 if figures["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
