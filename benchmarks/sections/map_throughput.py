"""3. ``map`` throughput.

* Trivial function: ``list(inc.map(range(N)))`` with N = ``mode.map_items``
  (200,000, as in the speed issue's row), in items per second, against
  - ``raw_batched_map``: the same work done at the limit with bare grpcio:
    the items pickled as tuples of 131,072 (turbolift's largest batch), at
    most 4 chunks in flight over the baseline servers, each server
    unpickling, applying ``inc`` and pickling the list of results, the
    caller unpickling the replies in order;
  - ``local_map``: ``list(map(inc, range(N)))`` in this process;
  - ``process_pool_map``: ``list(pool.map(inc, range(N), chunksize=c))`` on a
    ``ProcessPoolExecutor`` of as many processes as workers (spawn, started
    and warmed before timing), for each ``c`` of ``POOL_CHUNKSIZES``
    (``process_pool_map_c<c>_trivial``); ``process_pool_map_trivial`` is the
    one of them with the best median: the hand-tuned pool.
* CPU-bound function: ``burn(n)`` with ``n`` calibrated here so that one
  local call takes ~``mode.cpu_ms`` ms, over ``mode.cpu_items`` items:
  ``list(burn.map(...))`` on the cluster against a local loop
  ``[burn(n) for ...]``; the speed-up is the local loop's median time
  over each turbolift time. For reference, the same work on a bare
  ``ProcessPoolExecutor`` of as many processes as workers (started and
  warmed before timing): the speed-up this machine's cores allow at all.

Each figure is one sample per repetition (rates for the trivial map,
seconds for the CPU-bound one); contenders alternate; one warm-up run of
each is discarded (shorter, to stay within budget).
"""
from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import time
from collections import deque

from turbolift._wire import serialize as _serialize

from .. import workloads
from ..measure import Budget, rate_summary, summarise

TITLE = "map throughput"
RAW_CHUNK = 131_072
POOL_CHUNKSIZES = (1000, 5000, 20000, 50000)


def raw_batched_map(baseline, items, chunk: int = RAW_CHUNK, max_in_flight: int = 4) -> list:
    """``inc`` over ``items`` through the baseline servers, batched; results in order."""
    source = iter(items)
    pending: deque = deque()
    results: list = []

    def send() -> bool:
        batch = tuple(itertools.islice(source, chunk))
        if not batch:
            return False
        request = _serialize.dumps(batch, for_worker=True)
        pending.append(baseline.next_method("Batch_inc").future(request, timeout=120))
        return True

    more = True
    while more and len(pending) < max_in_flight:
        more = send()
    while pending:
        reply = pending.popleft().result()
        results.extend(_serialize.loads(reply))
        if more:
            more = send()
    return results


def calibrate(target_seconds: float) -> int:
    """``n`` such that ``burn(n)`` takes about ``target_seconds`` here."""
    n = 10_000
    while True:
        began = time.perf_counter()
        workloads.burn(n)
        took = time.perf_counter() - began
        if took >= 0.002 or n > 10**9:
            break
        n *= 2
    best = min(_timed(workloads.burn, n) for _ in range(3))
    return max(1, int(n * target_seconds / best))


def _timed(fn, *args) -> float:
    began = time.perf_counter()
    fn(*args)
    return time.perf_counter() - began


def _check(values: list, count: int) -> None:
    if len(values) != count or values[:1] != [1] or values[-1] != count:
        raise RuntimeError(f"map of inc returned {len(values)} wrong or unordered results")


def run(ctx) -> dict:
    mode = ctx.mode
    count = mode.map_items
    budget = Budget(mode.map_budget)
    spawn = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(mode.workers, mp_context=spawn)
    try:
        return _run(ctx, pool, count, budget)
    finally:
        pool.shutdown()


def _pool_map(pool, chunksize: int):
    return lambda items: list(pool.map(workloads.inc, items, chunksize=chunksize))


def _best_pool(figures: dict) -> dict:
    """The ``process_pool_map_c<c>_trivial`` figure with the best median, noting its chunksize."""
    tried = {c: figures[f"process_pool_map_c{c}_trivial"] for c in POOL_CHUNKSIZES}
    chunksize = max(tried, key=lambda c: tried[c]["median"])
    best = dict(tried[chunksize], chunksize=chunksize)
    best["note"] = (f"chunksize {chunksize}: the best median of chunksizes "
                    f"{', '.join(map(str, POOL_CHUNKSIZES))}")
    return best


def _run(ctx, pool, count: int, budget: Budget) -> dict:
    mode = ctx.mode
    remote = ctx.contenders.remote
    baseline = ctx.contenders.baseline
    list(pool.map(workloads.inc, range(4 * mode.workers)))  # start its processes
    trivial = {
        "turbolift_map": lambda items: list(remote.inc.map(items, timeout=300)),
        "raw_batched_map": lambda items: raw_batched_map(baseline, items),
        "local_map": lambda items: list(map(workloads.inc, items)),
        **{f"process_pool_map_c{c}": _pool_map(pool, c) for c in POOL_CHUNKSIZES},
    }
    runs: dict = {name: [] for name in trivial}
    names = list(trivial)
    for rep in range(mode.map_reps + 1):
        shift = rep % len(names)
        n = min(count, 20_000) if rep == 0 else count
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            values = trivial[name](range(n))
            seconds = time.perf_counter() - began
            _check(values, n)
            if rep:
                runs[name].append((n, seconds))
        if rep and budget.expired():
            break
    figures = {f"{name}_trivial": rate_summary(samples, "items/s") for name, samples in runs.items()}
    figures["process_pool_map_trivial"] = _best_pool(figures)

    n = calibrate(mode.cpu_ms / 1000.0)
    per_call = summarise([_timed(workloads.burn, n) for _ in range(5)], "s")
    items = [n] * mode.cpu_items
    expected = workloads.burn(n)
    cpu: dict = {"turbolift_map_cpu": [], "local_loop_cpu": [], "process_pool_cpu": []}
    list(pool.map(workloads.burn, [n] * 2 * mode.workers))  # warm its processes
    for rep in range(mode.cpu_reps + 1):
        subset = items[: max(2 * mode.workers, len(items) // 10)] if rep == 0 else items
        order = ["turbolift_map_cpu", "local_loop_cpu", "process_pool_cpu"]
        order = order[rep % 3:] + order[:rep % 3]
        for name in order:
            began = time.perf_counter()
            if name == "turbolift_map_cpu":
                values = list(remote.burn.map(subset, timeout=300))
            elif name == "process_pool_cpu":
                values = list(pool.map(workloads.burn, subset))
            else:
                values = [workloads.burn(k) for k in subset]
            seconds = time.perf_counter() - began
            if values != [expected] * len(subset):
                raise RuntimeError(f"{name} returned wrong results")
            if rep:
                cpu[name].append(seconds)
        if rep and budget.expired():
            break
    for name, samples in cpu.items():
        figures[name] = summarise(samples, "s")
    local_median = figures["local_loop_cpu"]["median"]
    for name in ("turbolift_map_cpu", "process_pool_cpu"):
        figures[f"{name}_speedup"] = summarise([local_median / seconds for seconds in cpu[name]], "x")
    figures["burn_local_call"] = per_call
    ctx.log(f"map: turbolift {figures['turbolift_map_trivial']['median']:,.0f} items/s, raw batched "
            f"{figures['raw_batched_map_trivial']['median']:,.0f} items/s, process pool "
            f"{figures['process_pool_map_trivial']['median']:,.0f} items/s "
            f"(chunksize {figures['process_pool_map_trivial']['chunksize']}); cpu map "
            f"{figures['turbolift_map_cpu']['median']:.2f}s vs local "
            f"{figures['local_loop_cpu']['median']:.2f}s")
    return {
        "figures": figures,
        "params": {"items": count, "raw_chunk": RAW_CHUNK, "raw_max_in_flight": 4,
                   "pool_chunksizes": list(POOL_CHUNKSIZES),
                   "pool_best_chunksize": figures["process_pool_map_trivial"]["chunksize"],
                   "cpu_items": mode.cpu_items, "cpu_target_ms": mode.cpu_ms, "burn_n": n,
                   "workers": mode.workers, "reps": mode.map_reps, "cpu_reps": mode.cpu_reps},
        "notes": [],
    }
