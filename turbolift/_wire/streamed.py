"""Iterators passed as arguments: the worker pulls their items from the caller, one at a time.

A generator cannot be copied to another process, an iterator streamed
from a worker (a :class:`~turbolift._caller.iterators.RemoteIterator`)
lives on a stream of its caller, and a copy of any iterator would advance
apart from the original; yet ``take(5, naturals())`` must work as it does
locally. So the caller keeps every iterator argument and sends a
placeholder in its place; on the worker the placeholder becomes an
iterator whose ``next()`` asks the caller for one item, on the stream of
the call (a ``NestedCall`` frame with ``pull`` set). One item per request:
the caller's iterator advances exactly as far as the function reads, as it
would locally (its side effects included).

What the worker side does with a placeholder is installed by the worker
(:func:`install`): this module imports neither side.
"""
from __future__ import annotations

import collections.abc
import io
import types
from typing import Any, Callable, Iterator, Optional

_pull_from_caller: Optional[Callable[[int], Iterator]] = None
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), list, tuple, dict, set})


def result_streams(value: Any) -> bool:
    """True for a *result* that travels as a stream of items rather than as a copy: a generator, an
    async generator, or an iterator of the builtins and itertools (map, filter, zip, ...). (The
    worker decides by it; ``turbolift trace`` too, so that it sizes what would be copied.)"""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType)):
        return True
    return kind.__module__ in ("builtins", "itertools") and hasattr(kind, "__next__")


def streamable(obj: Any) -> bool:
    """True for an iterator, which travels as a stream of its items rather than as a copy.

    Every iterator, not only generators: a copy would advance apart from
    the caller's, and two copies of a ``tee`` or an ``islice`` over one
    generator would each take items the other should have had. (Files are
    iterators too, but are refused: a function given one reads or writes it.)
    """
    return isinstance(obj, collections.abc.Iterator) and not isinstance(obj, io.IOBase)


class Streams:
    """The iterators one call's arguments stream, numbered from 1 (caller side)."""

    def __init__(self) -> None:
        self.iterators: dict[int, Iterator] = {}

    def add(self, iterator: Iterator) -> tuple:
        """Keep ``iterator``; return the reduction of its placeholder."""
        for number, kept in self.iterators.items():
            if kept is iterator:   # the same iterator twice: one stream, as locally
                return pulled, (number,)
        number = len(self.iterators) + 1
        self.iterators[number] = iterator
        return pulled, (number,)


def install(pull_from_caller: Callable[[int], Iterator]) -> None:
    """In a worker: how a placeholder becomes an iterator that pulls from the caller."""
    global _pull_from_caller
    _pull_from_caller = pull_from_caller


def pulled(number: int) -> Iterator:
    """What a placeholder unpickles to: the iterator of streamed argument ``number``."""
    if _pull_from_caller is None:
        raise TypeError("an iterator streamed from a caller can only be read by the call it was passed to")
    return _pull_from_caller(number)
