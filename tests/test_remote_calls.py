"""Marked functions called in this process, run by real local workers."""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import threading
import time

import pytest
from conftest import distributed_on

from turbolift import _runtime, on
from turbolift._caller.stub import RemoteStub
from turbolift.errors import RemoteTraceback


class Point:
    """A class of the program's own, travelling by reference to this module."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class CustomError(Exception):
    pass


def pid_and(value):
    return os.getpid(), value


def add_up(values, start):
    return sum(values, start)


def add(a, b):
    return a + b


def apply(function, *args):
    return function(*args)


def shift(point, dx):
    return Point(point.x + dx, point.y)


def fail(message):
    raise CustomError(message)


def fail_deep(depth):
    if depth == 0:
        raise KeyError("deep key")
    return fail_deep(depth - 1)


def nap_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def exits():
    raise SystemExit(7)


def unpicklable_result():
    return (i for i in range(3))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with distributed_on(2, tmp_path_factory.mktemp("cache")) as queue:
        yield queue


@pytest.fixture(scope="module")
def remote(cluster):
    """Mark module functions now that distribution is on (decoration binds)."""
    return lambda fn, **options: on(cluster, **options)(fn)


def test_results_equal_local_results_and_run_in_another_process(remote):
    f = remote(pid_and)
    for value in [1, "text", [1, 2, {"a": (3, None)}], b"\x00" * 1000, 2.5]:
        pid, echoed = f(value)
        assert echoed == value == f.local(value)[1]
        assert pid != os.getpid()
        assert pid in _runtime.worker_pids()


def test_lambdas_closures_and_own_classes_travel(remote):
    g = remote(apply)
    offset = 10
    assert g(lambda x: x * 3, 5) == 15
    assert g(lambda: offset + 1) == 11

    def make_adder(n):
        def adder(x):
            return x + n + offset
        return adder

    assert g(make_adder(5), 1) == 16
    moved = remote(shift)(Point(1, 2), 3)
    assert moved == Point(4, 2) and type(moved) is Point


def test_exceptions_keep_type_message_and_remote_traceback(remote):
    with pytest.raises(CustomError, match="boom") as info:
        remote(fail)("boom")
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail" in cause.tb and "raise CustomError(message)" in cause.tb
    with pytest.raises(KeyError, match="deep key") as info:
        remote(fail_deep)(3)
    assert info.value.__cause__.tb.count("in fail_deep") == 4


def raise_while_handling():
    try:
        {}["missing"]
    except KeyError:
        raise ValueError("while handling")  # noqa: B904 (the implicit chain is the point)


def test_an_exception_raised_while_handling_another_keeps_its_context_as_locally(remote):
    """The implicit chain stays as Python made it (no cause, context shown); the remote traceback
    is the cause at its end."""
    with pytest.raises(ValueError, match="while handling") as info:
        remote(raise_while_handling)()
    exc = info.value
    assert exc.__cause__ is None and not exc.__suppress_context__
    assert type(exc.__context__) is KeyError
    assert isinstance(exc.__context__.__cause__, RemoteTraceback)
    assert "raise ValueError" in exc.__context__.__cause__.tb


def test_system_exit_in_a_function_is_an_error_not_a_dead_worker(remote):
    with pytest.raises(SystemExit):
        remote(exits)()
    assert remote(add)(1, 2) == 3


def test_generators_stream_both_ways_and_uncopyable_arguments_are_clear_errors(remote):
    assert list(remote(unpicklable_result)()) == list(unpicklable_result())
    assert remote(add_up)((i for i in range(5)), 1) == add_up((i for i in range(5)), 1)
    with pytest.raises(TypeError, match=r"argument 1 \('a'\) cannot be sent: .*lock"):
        remote(add)(threading.Lock(), 1)
    assert remote(add)(1, 1) == 2


def test_submit_returns_futures_and_map_is_ordered(remote):
    f = remote(add)
    futures = [f.submit(i, i) for i in range(50)]
    assert all(isinstance(fut, concurrent.futures.Future) for fut in futures)
    assert [fut.result(timeout=30) for fut in futures] == [2 * i for i in range(50)]
    assert list(f.map(range(1000), range(1000))) == [2 * i for i in range(1000)]
    assert list(f.map([], [])) == []
    bad = remote(fail).submit("in a future")
    assert isinstance(bad.exception(timeout=30), CustomError)


def test_map_results_reach_every_way_of_iterating_over_them(remote):
    """A for loop, a comprehension, enumerate, zip and islice over ``f.map(...)`` itself, with nothing
    else holding the map: each sees every result (the map object is dropped at once)."""
    f = remote(add)
    expected = [2 * i for i in range(300)]
    assert [x for x in f.map(range(300), range(300))] == expected
    seen = []
    for x in f.map(range(300), range(300)):
        seen.append(x)
    assert seen == expected
    assert [x for _, x in enumerate(f.map(range(300), range(300)))] == expected
    assert [x for x, _ in zip(f.map(range(300), range(300)), range(300))] == expected
    assert list(itertools.islice(f.map(range(300), range(300)), 10)) == expected[:10]
    items = iter(f.map(range(300), range(300)))
    assert next(items) == 0 and list(items) == expected[1:]


def test_a_map_over_one_iterable_passes_each_item_whole_as_locally(remote, monkeypatch):
    # One iterable's items travel as themselves, not as 1-tuples: tuples and lists stay whole.
    shapes = []
    batch_of = RemoteStub.batch_of

    def recorded(self, *args, **kwargs):
        shapes.append(kwargs.get("single_arguments"))
        return batch_of(self, *args, **kwargs)

    monkeypatch.setattr(RemoteStub, "batch_of", recorded)
    items = [(1, 2), [3, 4], (), None, "ab", {"k": (5,)}, (6,)]
    f = remote(pid_and)
    for chunksize in (None, 1, 3):
        got = list(f.map(items, chunksize=chunksize))
        assert [value for _, value in got] == items
        assert {pid for pid, _ in got} <= set(_runtime.worker_pids())
    assert [value for _, value in f.map(iter(items))] == items
    assert shapes and all(shapes)   # every batch as a tuple of the arguments themselves
    shapes.clear()
    assert list(remote(add).map([1, 2], [3, 4])) == [4, 6]
    assert shapes and not any(shapes)   # two iterables: argument tuples
    with pytest.raises(TypeError, match="not iterable"):   # at once, as the local map and builtin map
        f.map(5)


def test_a_map_of_known_length_ends_in_small_batches_so_the_workers_finish_together(remote, monkeypatch):
    sizes = []
    batch_of = RemoteStub.batch_of

    def recorded(self, target, ref, items, count, *args, **kwargs):
        sizes.append(count)
        return batch_of(self, target, ref, items, count, *args, **kwargs)

    monkeypatch.setattr(RemoteStub, "batch_of", recorded)
    pids = list(remote(nap_pid).map([0.005] * 300))   # ~80 ms of work per batch: ~16 items
    assert len(pids) == 300 and sum(sizes) == 300
    assert max(sizes) >= 8, sizes
    # Each batch is at most a share of what is left (down to ~10 ms of work): the last ones are
    # small, where without the length they would be full batches and a remainder.
    assert all(size <= 4 for size in sizes[-3:]), sizes


def test_a_closed_map_gives_no_more_results_even_from_the_batch_it_was_in(remote):
    results = remote(add).map(range(100), range(100), chunksize=10)
    assert [next(results), next(results)] == [0, 2]
    results.close()
    with pytest.raises(StopIteration):
        next(results)
    assert list(results) == []
    looped = remote(add).map(range(100), range(100), chunksize=10)
    seen = []
    for value in looped:     # closed from inside its own loop: the loop ends there
        seen.append(value)
        if value == 4:
            looped.close()
    assert seen == [0, 2, 4]


def test_a_map_past_its_timeout_raises_timeout_error(remote):
    results = remote(nap_pid).map([10.0] * 4, timeout=0.5)
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish before its timeout"):
        list(results)
    assert time.monotonic() - began < 8.0   # raised long before the first item could finish


def test_two_threads_drawing_from_one_map_lose_no_item_as_with_one_generator(remote):
    results = remote(add).map(range(3000), range(3000), chunksize=50)
    seen, errors = [], []

    def draw():
        try:
            for value in results:
                seen.append(value)
        except ValueError as exc:   # "generator already executing", as from one generator locally
            errors.append(str(exc))

    threads = [threading.Thread(target=draw) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(seen) == [2 * i for i in range(3000)], (len(seen), errors)
    assert all("already executing" in error for error in errors)


def stops(x, _=None):
    if x % 10 == 3:
        next(iter(()))   # a bare next() on an exhausted iterator: StopIteration
    return x


def test_a_mapped_function_that_raises_stop_iteration_fails_at_its_item_as_locally(remote):
    f = remote(stops)
    for results in (f.map(range(50)), f.map(range(50), chunksize=7), f.map(range(50), range(50))):
        got = []
        with pytest.raises(RuntimeError, match="generator raised StopIteration"):
            for value in results:
                got.append(value)
        assert got == [0, 1, 2]
    assert f.submit(1).result(timeout=60) == 1   # the workers report it cheap: submits coalesce
    futures = [f.submit(x) for x in range(300)]   # each its own StopIteration, as a call raises it
    for x, future in enumerate(futures):
        if x % 10 == 3:
            assert type(future.exception(timeout=60)) is StopIteration
        else:
            assert future.result(timeout=60) == x


def _input(broken_at, item=None):
    for i in range(1000):
        if i == broken_at:
            if item is None:
                raise KeyError(f"input broke at {i}")
            yield item
        yield i


def test_an_error_of_the_input_comes_after_the_results_before_it_as_locally(remote):
    f = remote(pid_and)
    for broken_at in (0, 3, 100, 500):
        results = f.map(_input(broken_at))   # (sends batches ahead: the error must wait its turn)
        got = []
        with pytest.raises(KeyError, match=f"input broke at {broken_at}"):
            for _, value in results:
                got.append(value)
        assert got == list(range(broken_at))
    results = f.map(_input(7, item=threading.Lock()))    # an item that cannot travel, at its place too
    got = []
    with pytest.raises(TypeError, match="lock"):
        for _, value in results:
            got.append(value)
    assert got == list(range(7))


class RefusesToPickle:
    def __reduce__(self):
        raise ValueError("this one does not travel")


def test_the_input_ends_where_it_first_ends_and_any_failure_of_it_waits_its_turn(remote):
    f = remote(pid_and)

    def exits_at(k):
        yield from range(k)
        raise SystemExit(f"input exits at {k}")

    got = []
    with pytest.raises(SystemExit, match="input exits at 40"):
        for _, value in f.map(exits_at(40)):
            got.append(value)
    assert got == list(range(40))
    items = [*range(40), RefusesToPickle(), *range(19)]   # a value whose pickling fails, mid-batch
    got = []
    with pytest.raises(ValueError, match="does not travel"):
        for _, value in f.map(items, chunksize=60):
            got.append(value)
    assert got == list(range(40))

    class Resumes:   # an iterator that would go on after its StopIteration: a map ends at the first
        def __init__(self):
            self.n = 0

        def __iter__(self):
            return self

        def __next__(self):
            self.n += 1
            if self.n == 20 or self.n > 1000:
                raise StopIteration
            return self.n

    assert [value for _, value in f.map(Resumes())] == list(range(1, 20))


def test_a_dropped_map_with_a_failure_still_to_raise_frees_what_it_held(remote):
    import gc
    import weakref

    class Held:
        pass

    f = remote(pid_and)
    for close in (False, True):
        held = Held()
        alive = weakref.ref(held)

        def broken(keep=held):
            yield 1
            raise KeyError("input broke")

        results = f.map(broken())
        if close:
            results.close()
        del results, held, broken
        deadline = time.monotonic() + 30   # (a batch still in flight holds the map until it returns)
        while alive() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.05)
        assert alive() is None, "the map's input (and what it holds) outlived the map"


def test_map_raises_the_first_failing_item_in_order(remote):
    results = remote(fail_deep).map([0])
    with pytest.raises(KeyError):
        next(results)


def test_map_is_lazy_and_bounded(remote):
    consumed = []

    def numbers():
        for i in range(100_000):
            consumed.append(i)
            yield i

    results = remote(add).map(numbers(), range(100_000))
    assert next(results) == 0
    assert len(consumed) < 100_000  # not everything was pulled up front
    results.close()


def test_aio_awaits_remote_calls(remote):
    f = remote(add)

    async def main():
        return await asyncio.gather(*(f.aio(i, 1) for i in range(20)))

    assert asyncio.run(main()) == list(range(1, 21))


def test_many_concurrent_calls_spread_over_both_workers(remote):
    f = remote(nap_pid)
    futures = [f.submit(0.02) for _ in range(60)]
    pids = {fut.result(timeout=60) for fut in futures}
    assert len(pids) >= 2
    assert pids <= set(_runtime.worker_pids())


def test_timeout_raises_timeout_error(remote):
    with pytest.raises(TimeoutError):
        remote(nap_pid, timeout=0.2)(2)
    assert remote(add)(2, 2) == 4


def test_a_future_callback_may_wait_on_another_remote_call(remote):
    """Callbacks run off gRPC's channel thread, so waiting inside one cannot starve replies."""
    f = remote(add)
    chained: concurrent.futures.Future = concurrent.futures.Future()
    f.submit(1, 1).add_done_callback(lambda done: chained.set_result(f.submit(done.result(), 1).result(10)))
    assert chained.result(timeout=30) == 3
