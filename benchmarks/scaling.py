"""Throughput of tiny calls as workers are added: ``python -m benchmarks.scaling [WORKERS ...]``.

64 ``add.submit(i, 1)`` calls in flight (a sliding window) until 6,000 are
done, on a ``LocalQueue`` of 1, 2, 4, 8 and 100 workers (one cluster per
count, started once); prints the median calls per second and the caller's
CPU time per call over three repetitions after a warm-up. Each repetition
runs once with the coalescing limit of this version (``MAX_MESSAGES``
messages of a cheap function in flight) and once with the limit earlier
versions used (2 x workers), interleaved, so that both see the same load.

100 workers stand for a real cluster's size: they are real worker
processes (about 50 MB each), sharing this machine's cores with the caller
instead of having their own, so what the row shows is the caller's side:
its CPU per call and what its connections to 100 workers cost it while
idle (``idle CPU``: the caller's CPU per second over two idle seconds,
between the warm-up and the measurements). Starting them takes a while
on 2 cores (``start``: until every worker serves).
"""
from __future__ import annotations

import collections
import statistics
import sys
import tempfile
import time

from turbolift import LocalQueue, on
from turbolift._caller import coalesce
from turbolift._enabling import switch
from turbolift._runtime import disable

from . import workloads

CALLS, IN_FLIGHT, REPETITIONS = 6000, 64, 3
IDLE_SECONDS = 2.0
START_TIMEOUT = 600.0   # 100 workers importing gRPC on 2 shared cores


def one_run(add) -> tuple[float, float]:
    """(calls per second, caller CPU seconds per call) of one repetition."""
    cpu, wall = time.process_time(), time.perf_counter()
    pending: collections.deque = collections.deque()
    for i in range(CALLS):
        pending.append(add.submit(i, 1))
        if len(pending) >= IN_FLIGHT:
            pending.popleft().result(timeout=120)
    while pending:
        pending.popleft().result(timeout=120)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return CALLS / wall, cpu / CALLS


def one_count(workers: int) -> dict:
    """The measurements of one cluster size: {"now"/"before": [(rate, cpu)], "start": s, "idle": cpu/s}."""
    current = coalesce.MAX_MESSAGES
    cluster = LocalQueue(workers=workers, cache_dir=tempfile.mkdtemp(prefix="turbolift-scaling-"),
                         start_timeout=START_TIMEOUT)
    began = time.perf_counter()
    switch.enable(cluster)
    try:
        add = on()(workloads.add)
        add(1, 2)   # every worker up and connected
        found: dict = {"now": [], "before": [], "start": time.perf_counter() - began}
        for limit in (current, 2 * workers):   # warm: bundles on the workers both limits reach
            coalesce.MAX_MESSAGES = limit
            for _ in range(3):
                [future.result() for future in [add.submit(1, 2) for _ in range(max(500, 4 * workers))]]
        cpu = time.process_time()
        time.sleep(IDLE_SECONDS)
        found["idle"] = (time.process_time() - cpu) / IDLE_SECONDS
        for _ in range(REPETITIONS):
            for label in ("now", "before"):
                coalesce.MAX_MESSAGES = current if label == "now" else 2 * workers
                found[label].append(one_run(add))
        return found
    finally:
        coalesce.MAX_MESSAGES = current
        disable()


def main(argv: list[str]) -> int:
    print(f"| workers | calls/s (limit {coalesce.MAX_MESSAGES}) | caller CPU per call "
          "| calls/s (limit 2 x workers) | caller CPU per call | caller idle CPU | start |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for workers in [int(arg) for arg in argv] or [1, 2, 4, 8, 100]:
        found = one_count(workers)
        cells = []
        for label in ("now", "before"):
            cells += [f"{statistics.median([rate for rate, _ in found[label]]):,.0f}",
                      f"{statistics.median([cpu for _, cpu in found[label]]) * 1e6:,.0f} µs"]
        cells += [f"{found['idle'] * 100:.1f}%", f"{found['start']:.1f} s"]
        print(f"| {workers} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
