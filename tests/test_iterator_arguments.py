"""Iterators passed as arguments behave as locally: the worker pulls their items from the caller.

A generator, an iterator streamed from another worker, a ``tee`` or an
``islice`` over them: each is read by the distributed function exactly as
far as it reads it, in the caller, as it would be read locally (the side
effects of the caller's generator show how far). Every test compares the
same code run locally with its run on real local workers.
"""
from __future__ import annotations

import itertools
import os

import pytest

from turbolift import on


def take(n, seq):
    return list(itertools.islice(seq, n))


def total(seq):
    return sum(seq)


def doubled(seq):
    for x in seq:
        yield 2 * x


def naturals():
    return itertools.count()


def pid_and_first(seq):
    return os.getpid(), next(iter(seq))


def first_error(seq):
    try:
        for _ in seq:
            pass
    except ValueError as exc:
        return f"caught {exc}"
    return "no error"


def keep(seq):
    return seq


def read_twice(a, b):
    return list(a), list(b)


def noted(log, n):
    """Yields 0..n-1 in the caller, noting each item taken."""
    for i in range(n):
        log.append(i)
        yield i


def failing():
    yield 1
    raise ValueError("the caller's generator failed")


def both_ways(fn, args_of):
    """``fn`` run locally and distributed on fresh arguments from ``args_of()``: (local, remote)."""
    local = fn(*args_of())
    remote = on()(fn)(*args_of())
    return local, remote


def test_a_generator_is_read_as_far_as_the_function_reads_it(cluster):
    logs = []

    def arguments():
        logs.append([])
        return 3, noted(logs[-1], 10)

    local, remote = both_ways(take, arguments)
    assert local == remote == [0, 1, 2]
    assert logs[0] == logs[1] == [0, 1, 2]   # the caller's generator advanced exactly as far
    pid, first = on()(pid_and_first)(noted([], 5))
    assert first == 0 and pid in cluster.pids()


def test_infinite_and_remote_iterators_compose(cluster):
    f_take, f_doubled, f_naturals = on()(take), on()(doubled), on()(naturals)
    assert f_take(4, f_doubled(f_naturals())) == take(4, doubled(naturals())) == [0, 2, 4, 6]
    assert on()(total)(f_doubled(iter(range(10)))) == 90
    assert f_take(3, itertools.islice(f_naturals(), 1, None)) == [1, 2, 3]


def test_tees_and_islices_share_their_source_as_locally(cluster):
    def run(take_):
        a, b = itertools.tee(doubled(iter(range(6))))
        source = iter(range(10))
        first, second = itertools.islice(source, 3), itertools.islice(source, 3)
        return take_(2, a), take_(3, b), take_(5, first), take_(5, second)

    assert run(on()(take)) == run(take) == ([0, 2], [0, 2, 4], [0, 1, 2], [3, 4, 5])
    local, remote = both_ways(read_twice, lambda: (lambda a: (a, a))(iter(range(4))))
    assert local == remote == ([0, 1, 2, 3], [])   # one iterator passed twice is one stream


def test_an_exception_of_the_callers_generator_reaches_the_function(cluster):
    assert on()(first_error)(failing()) == first_error(failing()) == "caught the caller's generator failed"


def test_an_iterator_argument_cannot_be_returned_or_mapped_and_says_what_to_do(cluster):
    with pytest.raises(TypeError, match="cannot be sent back: return a list"):
        on()(keep)(iter([1, 2]))
    # Only a call's own arguments stream: in map's items a generator is refused, and an iterator that
    # pickle copies (a list's, itertools') travels as that copy, as pickle makes it.
    with pytest.raises(TypeError, match="a builtins.generator cannot be sent to a worker: pass its items"):
        list(on()(total).map([(i for i in [1]), (i for i in [2])]))
    assert list(on()(total).map([iter([1]), iter([2, 3])])) == [1, 5] == list(map(total, [[1], [2, 3]]))
