"""Generators, iterators and async functions behave as locally: items stream from the worker.

Each test runs the same function locally (``.local`` or a plain call) and
distributed on real local workers, and compares. The worker's side is
observed through a log file the generator appends to: how far it got, and
whether its ``finally`` ran.
"""
from __future__ import annotations

import asyncio
import gc
import itertools
import os
import time
from pathlib import Path

import pytest

from turbolift import on

WAIT = 30.0   # generous: the machine is shared


def counting(n, log):
    """Yields 0..n-1, noting each item and its end in ``log`` (on whichever machine it runs)."""
    try:
        for i in range(n):
            with open(log, "a") as handle:
                handle.write(f"{i}\n")
            yield i
    finally:
        with open(log, "a") as handle:
            handle.write("finally\n")


def raising_at(n, at):
    for i in range(n):
        if i == at:
            raise ValueError(f"no item {i}")
        yield i


def squares_map(n):
    return map(lambda x: x * x, range(n))  # noqa: C417 (a map object is the point)


def evens_filter(n):
    return filter(lambda x: x % 2 == 0, range(n))


def pairs_product(n):
    return itertools.product(range(n), "ab")


def pid_then_items(n):
    yield os.getpid()
    yield from range(n)


async def async_double(x):
    await asyncio.sleep(0.01)
    return 2 * x


async def async_countdown(n):
    for i in range(n, 0, -1):
        await asyncio.sleep(0)
        yield i


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_generator_function_streams_the_same_items_from_a_worker(cluster, tmp_path):
    remote = on(cluster)(pid_then_items)
    worker_pid, *items = list(remote(5))
    assert items == list(pid_then_items(5))[1:]
    assert worker_pid != os.getpid() and worker_pid in cluster.local_pids()


def test_functions_returning_builtin_iterators_stream_them(cluster):
    for fn, arg in ((squares_map, 10), (evens_filter, 11), (pairs_product, 3)):
        assert list(on(cluster)(fn)(arg)) == list(fn(arg)), fn.__name__


def test_nothing_runs_until_the_first_item_and_a_slow_consumer_holds_the_producer_back(cluster, tmp_path):
    log = tmp_path / "produced.log"
    items = on(cluster)(counting)(10**9, str(log))    # practically infinite
    time.sleep(0.5)
    assert lines(log) == [], "a generator runs nothing before its first item is asked for"
    assert list(itertools.islice(items, 3)) == [0, 1, 2]
    time.sleep(1.0)  # the consumer dawdles: the producer must wait for credit
    produced = len(lines(log))
    assert 3 <= produced <= 3 + 64 + 1, f"the worker ran {produced} items ahead of a consumer that took 3"
    items.close()
    assert wait_for(lambda: "finally" in lines(log)), "close() must run the generator's finally on the worker"


def test_an_exception_arrives_at_the_item_where_it_was_raised(cluster):
    received = []
    with pytest.raises(ValueError, match="no item 3"):
        for item in on(cluster)(raising_at)(10, 3):
            received.append(item)
    assert received == [0, 1, 2]
    local = []
    with pytest.raises(ValueError, match="no item 3"):
        for item in raising_at(10, 3):
            local.append(item)
    assert received == local


def test_dropping_an_unfinished_iterator_stops_the_generator_on_the_worker(cluster, tmp_path):
    log = tmp_path / "dropped.log"
    items = on(cluster)(counting)(10**9, str(log))
    assert next(items) == 0
    del items
    gc.collect()
    assert wait_for(lambda: "finally" in lines(log)), "a dropped iterator must stop its generator"
    # The worker serves on: the stream of the dropped iterator was cancelled, not the worker.
    assert list(on(cluster)(raising_at)(3, 99)) == [0, 1, 2]


def test_breaking_out_of_a_for_loop_and_finishing_normally(cluster, tmp_path):
    log = tmp_path / "loop.log"
    for item in on(cluster)(counting)(100, str(log)):
        if item == 5:
            break
    finished = list(on(cluster)(counting)(4, str(tmp_path / "whole.log")))
    assert finished == [0, 1, 2, 3]
    assert wait_for(lambda: lines(tmp_path / "whole.log")[-1:] == ["finally"])


def test_async_functions_and_async_generators_keep_their_shape(cluster):
    double = on(cluster)(async_double)
    countdown = on(cluster)(async_countdown)

    async def use(double, countdown):
        values = [await double(3), await double(4)]
        async for item in countdown(4):
            values.append(item)
        return values

    assert asyncio.run(use(double, countdown)) == asyncio.run(use(async_double, async_countdown)) == \
        [6, 8, 4, 3, 2, 1]


def test_submit_and_map_of_generator_functions_give_iterators(cluster):
    remote = on(cluster)(raising_at)
    assert list(remote.submit(4, 99).result(timeout=WAIT)) == [0, 1, 2, 3]
    assert [list(each) for each in remote.map([2, 3], [99, 99])] == [[0, 1], [0, 1, 2]]


def test_a_large_item_beside_small_ones(cluster):
    payload = b"x" * (9 * 1024 * 1024)   # more than one frame: it travels in chunks
    items = list(on(cluster)(itertools.chain)([1], [payload], [2]))
    assert items == [1, payload, 2]
