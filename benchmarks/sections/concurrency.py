"""2. Concurrent throughput.

* 64 in flight: a sliding window of ``mode.in_flight`` outstanding calls
  (a new call starts as soon as one finishes) until ``mode.conc_calls``
  calls are done. Turbolift uses ``add.submit(1, 2)``; the baseline uses
  grpcio futures (``multicallable.future``) of the raw echo, and of the
  dill-echo, of the same bytes, rotating over as many server processes as
  turbolift has workers. Figure: calls per second per repetition (median
  over repetitions), and the latency of each call from start to
  completion (median, p99).
* Burst: ``mode.burst_tasks`` calls submitted at once, then gathered: the
  shape in which the peers (Ray, Dask) are measured in section 7.

Variants alternate in repetitions; one warm-up repetition of each is discarded.
"""
from __future__ import annotations

import time
from typing import Callable

from turbolift._wire import serialize as _serialize

from ..measure import Budget, rate_summary, summarise, windowed

TITLE = "Concurrent throughput"


def burst(start_call: Callable, total: int) -> tuple:
    """Start ``total`` calls at once, then wait for all; return (calls, seconds)."""
    began = time.perf_counter()
    futures = [start_call() for _ in range(total)]
    for future in futures:
        future.result(timeout=120)
    return total, time.perf_counter() - began


def run(ctx) -> dict:
    mode = ctx.mode
    remote = ctx.contenders.remote
    baseline = ctx.contenders.baseline
    add_bytes = _serialize.dumps(((1, 2), {}), for_worker=True)

    def raw(method: str) -> Callable:
        return lambda: baseline.next_method(method).future(add_bytes, timeout=60)

    variants = {
        "turbolift_add": lambda: remote.add.submit(1, 2),
        "raw_echo_add": raw("Echo"),
        "dill_echo_add": raw("Call_add"),
    }
    budget = Budget(mode.conc_budget)
    rates: dict = {name: [] for name in variants}
    latencies: dict = {name: [] for name in variants}
    names = list(variants)
    for rep in range(mode.conc_reps + 1):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            count = min(200, mode.conc_calls) if rep == 0 else mode.conc_calls
            sent, seconds, lat = windowed(variants[name], count, mode.in_flight, budget)
            if rep:  # repetition 0 is the warm-up
                rates[name].append((sent, seconds))
                latencies[name].extend(lat)
        if rep and budget.expired():
            break

    bursts: dict = {"turbolift_add": [], "raw_echo_add": []}
    for rep in range(mode.conc_reps + 1):
        for name in bursts:
            count = min(200, mode.burst_tasks) if rep == 0 else mode.burst_tasks
            result = burst(variants[name], count)
            if rep:
                bursts[name].append(result)
        if rep and budget.expired():
            break

    check = remote.add.submit(1, 2).result(timeout=60)
    if check != 3:
        raise RuntimeError(f"turbolift add.submit(1, 2) returned {check!r}")
    figures = {}
    for name in variants:
        figures[f"{name}_{mode.in_flight}_in_flight"] = rate_summary(rates[name], "calls/s")
        figures[f"{name}_{mode.in_flight}_in_flight_latency"] = summarise(latencies[name], "s")
    for name, runs in bursts.items():
        figures[f"{name}_burst"] = rate_summary(runs, "calls/s")
    ctx.log("concurrency: " + ", ".join(
        f"{name} {fig['median']:,.0f}/s" for name, fig in figures.items() if fig["unit"] == "calls/s"))
    return {
        "figures": figures,
        "params": {"in_flight": mode.in_flight, "calls_per_rep": mode.conc_calls,
                   "burst_tasks": mode.burst_tasks, "reps": mode.conc_reps, "servers": mode.workers},
        "notes": [],
    }

