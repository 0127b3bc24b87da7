"""Distribution off: the same API runs in-process, and no gRPC is imported."""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import subprocess
import sys

import pytest

from turbolift import on


@on
def bare(x: int, y: int = 2) -> int:
    """Multiply."""
    return x * y


@on()
def empty_call(x):
    return x + 1


@on("local:3", timeout=5)
def with_cluster(x):
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x


def test_every_decorator_form_keeps_name_signature_and_doc():
    assert bare.__name__ == "bare"
    assert bare.__doc__ == "Multiply."
    assert inspect.signature(bare) == inspect.signature(bare.__wrapped__)
    assert list(inspect.signature(bare).parameters) == ["x", "y"]
    assert bare(3) == 6 and empty_call(1) == 2 and with_cluster(4) == 4


def test_submit_map_aio_local_give_the_same_results():
    future = bare.submit(3, y=5)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result() == 15
    assert list(bare.map([1, 2, 3], [4, 5, 6])) == [4, 10, 18]
    with pytest.raises(TypeError, match="not iterable"):   # at once, as builtin map and distributed map
        bare.map(5)
    assert asyncio.run(bare.aio(7)) == 14
    assert bare.local(2) == 4


def test_exceptions_are_raised_locally_and_stored_in_futures():
    with pytest.raises(ValueError, match="negative: -1"):
        with_cluster(-1)
    future = with_cluster.submit(-2)
    assert isinstance(future.exception(), ValueError)
    results = with_cluster.map([1, -3])
    assert next(results) == 1
    with pytest.raises(ValueError):
        next(results)


def test_methods_can_be_marked():
    class Counter:
        def __init__(self, start):
            self.start = start

        @on()
        def add(self, n):
            return self.start + n

    counter = Counter(10)
    assert counter.add(5) == 15
    assert counter.add.submit(1).result() == 11
    assert list(counter.add.map([1, 2])) == [11, 12]


def test_importing_and_using_turbolift_locally_imports_no_grpc():
    code = (
        "import sys, turbolift\n"
        "@turbolift.on()\n"
        "def f(x): return x * 2\n"
        "assert f(2) == 4 and f.submit(3).result() == 6 and list(f.map([1])) == [2]\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'dill'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_cluster_urls_are_clear_errors():
    from turbolift.errors import ConfigurationError
    from turbolift.platforms import resolve

    for url in ("local:x", "http://h:1", "k9s://x"):
        with pytest.raises(ConfigurationError, match="cluster URL|use 'local'"):
            resolve(url)
    with pytest.raises(ConfigurationError, match="no port"):
        resolve("grpc://hostonly")
