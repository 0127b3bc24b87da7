"""The functions every contender runs: turbolift workers, the bare grpcio
baseline server, and the peers (Ray, Dask).

Turbolift ships this module to its workers as a bundle, so it imports the
standard library only and does no work at import time.
"""
from __future__ import annotations

import os
import random

_PATTERN_SIZE = 1024 * 1024
_payloads: dict = {}


def noop() -> None:
    """The empty call: what is left is pure call overhead."""
    return None


def add(a: int, b: int) -> int:
    """The call of the issue: ``add(1, 2)``."""
    return a + b


def inc(x: int) -> int:
    """The trivial function mapped over many items."""
    return x + 1


def inc_batch(xs: list) -> list:
    """``inc`` over a hand-made batch of items: one task of a peer for many items (section 7)."""
    return [x + 1 for x in xs]


def burn(n: int) -> int:
    """CPU-bound work; ``n`` is calibrated so that one call takes ~10 ms."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def size_of(data: bytes) -> int:
    """Receives a large argument, returns its length (the upload direction)."""
    return len(data)


def payload(size: int) -> bytes:
    """``size`` deterministic bytes, built once per process and then reused.

    The download direction returns this: after the first (warm-up) call the
    worker only serialises and sends, as the baseline server does.
    """
    found = _payloads.get(size)
    if found is None:
        _payloads.clear()  # hold one large payload at a time
        found = make_payload(size)
        _payloads[size] = found
    return found


def prepare_payload(size: int) -> int:
    """Build and keep ``payload(size)`` now, outside any timing; returns this process's pid."""
    payload(size)
    return os.getpid()


def release_payloads() -> int:
    """Drop the kept payload; returns this process's pid."""
    _payloads.clear()
    return os.getpid()


def make_payload(size: int) -> bytes:
    """Deterministic, incompressible-looking bytes (a repeated random 1 MiB block)."""
    block = random.Random(size).randbytes(min(size, _PATTERN_SIZE))
    whole, rest = divmod(size, len(block)) if block else (0, 0)
    return block * whole + block[:rest]
