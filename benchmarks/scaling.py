"""Throughput of tiny calls as workers are added: ``python -m benchmarks.scaling [WORKERS ...]``.

64 ``add.submit(i, 1)`` calls in flight (a sliding window) until 6,000 are
done, on a fresh ``LocalQueue`` of 1, 2, 4 and 8 workers, three
repetitions each after a warm-up; prints the median calls per second and
the caller's CPU time per call. Each repetition runs once with the
coalescing limit of this version (``MAX_MESSAGES`` messages of a cheap
function in flight) and once with the limit earlier versions used
(2 x workers), interleaved, so that both see the same machine load.
"""
from __future__ import annotations

import collections
import sys
import tempfile
import time

from turbolift import LocalQueue, on
from turbolift._caller import coalesce
from turbolift._enabling import switch
from turbolift._runtime import disable

from . import workloads

CALLS, IN_FLIGHT, REPETITIONS = 6000, 64, 3


def one_run(workers: int) -> tuple[float, float]:
    """(calls per second, caller CPU seconds per call) of one repetition."""
    switch.enable(LocalQueue(workers=workers, cache_dir=tempfile.mkdtemp(prefix="turbolift-scaling-")))
    try:
        add = on()(workloads.add)
        for _ in range(3):   # warm: bundles uploaded to every worker, the cost estimate learnt
            [future.result() for future in [add.submit(1, 2) for _ in range(500)]]
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
    finally:
        disable()


def main(argv: list[str]) -> int:
    current = coalesce.MAX_MESSAGES
    print(f"| workers | calls/s (limit {current}) | caller CPU per call | calls/s (limit 2 x workers) "
          "| caller CPU per call |\n| --- | --- | --- | --- | --- |")
    for workers in [int(arg) for arg in argv] or [1, 2, 4, 8]:
        found: dict = {"now": [], "before": []}
        for _ in range(REPETITIONS):
            for label in found:
                coalesce.MAX_MESSAGES = current if label == "now" else 2 * workers
                found[label].append(one_run(workers))
        coalesce.MAX_MESSAGES = current
        cells = []
        for label in ("now", "before"):
            rates = sorted(rate for rate, _ in found[label])
            cpus = sorted(cpu for _, cpu in found[label])
            cells += [f"{rates[len(rates) // 2]:,.0f}", f"{cpus[len(cpus) // 2] * 1e6:,.0f} µs"]
        print(f"| {workers} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
