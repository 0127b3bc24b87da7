"""Which functions and classes travel by value rather than by reference.

A worker can import what lives in an importable module; it cannot import
the caller's ``__main__`` (its own is a worker) nor reach a function or
class defined inside another function. Those travel serialised by value.
One rule, used by the serialiser, the bundles and the marker.
"""
from __future__ import annotations


def is_local(qualname: str) -> bool:
    """True for a qualified name defined inside a function (or a lambda)."""
    return "<locals>" in qualname or "<lambda>" in qualname


def travels_by_value(module: "str | None", qualname: str) -> bool:
    """True when ``module.qualname`` cannot be imported on a worker: it travels by value."""
    return module in (None, "__main__") or is_local(qualname)
