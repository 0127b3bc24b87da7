"""Serialisation of arguments and results (exceptions: :mod:`turbolift._wire.outcomes`).

The C pickler does the bulk of the work because it is ~30x faster than dill
on small values; dill is used only for the objects pickle cannot carry by
reference: lambdas, closures, and functions and classes defined in the
caller's ``__main__`` (which does not exist on a worker). This mirrors what
cloudpickle does, using dill as the by-value engine.

Two directions need different rules for ``__main__`` objects:

* caller -> worker (``for_worker=True``): by value, the worker has no
  ``__main__`` of the caller's program.
* worker -> caller (``for_worker=False``): by reference, so that a result
  whose class came from the caller's ``__main__`` is rebuilt as an instance
  of the caller's very own class (``isinstance`` keeps working).
"""
from __future__ import annotations

import importlib
import io
import pickle
import sys
import types
from typing import Any

import dill

from .by_value import is_local

PROTOCOL = 5


def _dill_loads(data: bytes) -> Any:
    return dill.loads(data)


def _import_module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


class _DillPickler(dill.Pickler):
    """dill, but modules always by reference.

    dill saves a project module as a reference *plus its whole ``__dict__``*,
    which on load overwrites the worker's copy of the module with the
    caller's state (and defeats versioned bundles). A worker imports project
    modules from the shipped bundle, so the name is all it needs.
    """

    dispatch = dill.Pickler.dispatch.copy()


def _save_module(pickler: dill.Pickler, module: types.ModuleType) -> None:
    pickler.save_reduce(_import_module, (module.__name__,), obj=module)


_DillPickler.dispatch[types.ModuleType] = _save_module


def _dill_dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _DillPickler(buffer, PROTOCOL, recurse=True).dump(obj)
    return buffer.getvalue()


def _main_attribute(qualname: str) -> Any:
    """Resolve ``qualname`` in the caller's ``__main__`` (used on load)."""
    obj: Any = sys.modules["__main__"]
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _Pickler(pickle.Pickler):
    """The C pickler with a hook that hands unpicklable code objects to dill."""

    def __init__(self, file: io.BytesIO, for_worker: bool) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._for_worker = for_worker

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, (types.FunctionType, type)):
            return NotImplemented
        qualname = getattr(obj, "__qualname__", "")
        in_main = getattr(obj, "__module__", None) == "__main__"
        if is_local(qualname) or (in_main and self._for_worker):
            return _dill_loads, (_dill_dumps(obj),)
        if in_main:
            return _main_attribute, (qualname,)
        return NotImplemented


# Values of these exact types hold no code: the plain C pickler carries them as is.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})
# pickle.dumps copies its output once more than a BytesIO does: keep large
# payloads on the path that holds them only once.
_SMALL = 64 * 1024


def _small(value: Any) -> bool:
    return type(value) not in (bytes, str, bytearray) or len(value) <= _SMALL


def _plain_call(obj: Any) -> bool:
    """True for small ``(args, kwargs)`` whose every value is of a ``_PLAIN`` type (no scan of depth)."""
    if type(obj) is not tuple or len(obj) != 2:
        return False
    args, kwargs = obj
    return (type(args) is tuple and type(kwargs) is dict
            and all(type(value) in _PLAIN and _small(value) for value in args)
            and all(type(value) in _PLAIN and _small(value) for value in kwargs.values()))


def dumps(obj: Any, *, for_worker: bool, what: str = "value") -> bytes:
    """Serialise ``obj``; see the module docstring for ``for_worker``.

    Raises ``TypeError`` naming ``what`` and the offending type when neither
    pickle nor dill can carry it (a generator, a socket, an open file ...).
    """
    if (not for_worker and _small(obj)) or _plain_call(obj):
        # The fast path. On a worker every object pickle takes by reference is
        # found by the caller too, except ``__main__`` ones, which the plain
        # pickler refuses (the worker's __main__ is not the caller's): those,
        # lambdas and closures fall through to the hooked pickler below.
        try:
            return pickle.dumps(obj, PROTOCOL)
        except Exception:
            pass
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, for_worker).dump(obj)
    except (pickle.PicklingError, TypeError, AttributeError) as first:
        # Some objects pickle only through dill's own pickler (e.g. a bound
        # method of a __main__ class instance nested deep in a structure).
        try:
            return _dill_dumps(obj)
        except Exception:
            raise TypeError(
                f"turbolift cannot serialise the {what}: {first}. "
                "Arguments and results of distributed functions must be picklable "
                "(dill is used for lambdas and closures); pass plain data instead "
                "of generators, open files or connections."
            ) from first
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """Deserialise what :func:`dumps` produced (in either direction)."""
    return pickle.loads(data)
