"""Small helpers for the caller's ``concurrent.futures.Future`` objects."""
from __future__ import annotations

import concurrent.futures as cf
from typing import Any, Optional


def settle(out: cf.Future, value: Any = None, exc: Optional[BaseException] = None) -> None:
    """Complete ``out`` with ``value`` or ``exc`` unless it is done already (e.g. cancelled meanwhile)."""
    try:
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(value)
    except cf.InvalidStateError:
        pass


def copy_outcome(source: cf.Future, target: cf.Future) -> None:
    """Give ``target`` the result or exception of the finished ``source``."""
    try:
        value = source.result()
    except BaseException as exc:
        settle(target, exc=exc)
    else:
        settle(target, value=value)
