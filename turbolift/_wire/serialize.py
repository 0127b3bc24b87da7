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

import enum
import importlib
import io
import pickle
import sys
import types
from typing import Any, Optional

import dill

from . import buffers, dill_globals, reducers, streamed
from .by_value import is_local
from .chunked import Payload, Pieces, PieceWriter

PROTOCOL = 5

dill_globals.install()   # dill's own search swaps sys.stdout: not safe among threads


def _dill_loads(data: bytes) -> Any:
    return dill.loads(data)


def _import_module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _main_attribute(qualname: str) -> Any:
    """Resolve ``qualname`` in the caller's ``__main__`` (used on load)."""
    obj: Any = sys.modules["__main__"]
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _load_class(data: bytes) -> type:
    return dill.loads(data)


def _load_enum(data: bytes) -> type:
    return reducers.build_enum(dill.loads(data))


def _rebuild_class(identity: str, data: bytes) -> type:
    return reducers.rebuild_class(identity, _load_class, data)


def _rebuild_enum(identity: str, data: bytes) -> type:
    return reducers.rebuild_class(identity, _load_enum, data)


def _class_by_value(cls: type, modules: Optional[set]) -> tuple:
    """The reduction of a class of the caller that travels by value, with its id."""
    if issubclass(cls, enum.Enum) and cls.__members__:
        return _rebuild_enum, (reducers.class_id(cls), _dill_dumps(reducers.enum_parts(cls), modules))
    return _rebuild_class, (reducers.class_id(cls), _dill_dumps(cls, modules, shipping=cls))


def _by_reference(obj: Any) -> bool:
    """True for a function or class that pickles as a reference to an importable module."""
    module = getattr(obj, "__module__", None)
    return module is not None and module != "__main__" and not is_local(getattr(obj, "__qualname__", ""))


class _DillPickler(dill.Pickler):
    """dill, with turbolift's rules: modules by reference, nothing uncopyable, caller classes tracked.

    dill saves a project module as a reference *plus its whole ``__dict__``*,
    which on load overwrites the worker's copy of the module with the
    caller's state (and defeats versioned bundles). A worker imports project
    modules from the shipped bundle, so the name is all it needs.
    """

    # The same kind of table as dill's own (it maps metaclasses to dill's
    # class saving; a plain dict copy would lose that).
    dispatch = type(dill.Pickler.dispatch)(dill.Pickler.dispatch)

    def __init__(self, file: io.BytesIO, *, modules: Optional[set] = None, shipping: Any = None) -> None:
        super().__init__(file, PROTOCOL, recurse=True)
        self._modules = modules
        self._shipping = shipping     # the class being saved by value right now (not tracked again)

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        reducers.refuse(obj)
        if isinstance(obj, type) and obj is not self._shipping and not _by_reference(obj):
            self.save_reduce(*_class_by_value(obj, self._modules), obj=obj)
            return
        if self._modules is not None and isinstance(obj, (types.FunctionType, type)) and _by_reference(obj):
            self._modules.add(obj.__module__)
        super().save(obj, save_persistent_id)


def _save_module(pickler: dill.Pickler, module: types.ModuleType) -> None:
    modules = getattr(pickler, "_modules", None)
    if modules is not None:
        modules.add(module.__name__)
    pickler.save_reduce(_import_module, (module.__name__,), obj=module)


_DillPickler.dispatch[types.ModuleType] = _save_module


def _dill_dumps(obj: Any, modules: Optional[set] = None, shipping: Any = None) -> bytes:
    buffer = io.BytesIO()
    _DillPickler(buffer, modules=modules, shipping=shipping).dump(obj)
    return buffer.getvalue()


class _Pickler(pickle.Pickler):
    """The C pickler with turbolift's rules (see :mod:`.reducers`) and dill for code it cannot carry."""

    def __init__(self, file: Any, for_worker: bool, modules: Optional[set] = None,
                 streams: Optional[streamed.Streams] = None,
                 out_of_band: Optional[buffers.Collector] = None) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=out_of_band)
        self._for_worker = for_worker
        self._modules = modules       # collects the modules referenced (arguments to a worker)
        self._streams = streams       # keeps the iterators that stream (arguments of one call)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)):
            return self._code(obj)
        if isinstance(obj, BaseException) and reducers.plain_exception(obj):
            return reducers.exception_reduction(obj)
        if self._for_worker and self._streams is not None and streamed.streamable(obj):
            return self._streams.add(obj)   # an iterator argument: the worker pulls its items
        # (Elsewhere, in map's items or a nested call's result, iterators that pickle, such as a list's
        # or itertools', travel as the copies pickle makes; generators are refused by name.)
        reducers.refuse(obj)
        return NotImplemented

    def _code(self, obj: Any) -> Any:
        qualname = getattr(obj, "__qualname__", "")
        module = getattr(obj, "__module__", None)
        in_main = module == "__main__"
        if self._for_worker:
            if isinstance(obj, type) and (in_main or is_local(qualname)):
                return _class_by_value(obj, self._modules)
            if in_main or is_local(qualname):
                return _dill_loads, (_dill_dumps(obj, self._modules),)
            if self._modules is not None and module:
                self._modules.add(module)
            return NotImplemented
        if isinstance(obj, type):
            identity = reducers.received_id(obj)
            if identity is not None:  # the caller's own class: it gets that very class back
                return reducers.caller_class, (identity,)
        if is_local(qualname):
            return _dill_loads, (_dill_dumps(obj),)
        if in_main:
            return _main_attribute, (qualname,)
        return NotImplemented


# Values of these exact types hold no code: the plain C pickler carries them as is.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})
_CONTAINERS = (list, tuple, dict)
# pickle.dumps copies its output once more than a BytesIO does: keep large
# payloads on the path that holds them only once.
_SMALL = 64 * 1024


def _small(value: Any) -> bool:
    return type(value) not in (bytes, str, bytearray) or len(value) <= _SMALL


def _plain_values(values: Any) -> bool:
    return all(type(value) in _PLAIN and _small(value) for value in values)


def _plain(obj: Any) -> bool:
    """True for a small value of a _PLAIN type, or a list, tuple or dict of them (one level deep)."""
    kind = type(obj)
    if kind in _PLAIN:
        return _small(obj)
    if kind is dict:
        return _plain_values(obj.keys()) and _plain_values(obj.values())
    return kind in _CONTAINERS and _plain_values(obj)


def _plain_call(obj: Any) -> bool:
    """True for small ``(args, kwargs)`` whose every value is of a ``_PLAIN`` type (no scan of depth)."""
    if type(obj) is not tuple or len(obj) != 2:
        return False
    args, kwargs = obj
    return (type(args) is tuple and type(kwargs) is dict and _plain_values(args)
            and _plain_values(kwargs.values()))


def dumps(obj: Any, *, for_worker: bool, what: str = "value", modules: Optional[set] = None,
          streams: Optional[streamed.Streams] = None) -> bytes:
    """Serialise ``obj`` into one byte string (as :func:`dumps_payload`, joined)."""
    payload = dumps_payload(obj, for_worker=for_worker, what=what, modules=modules, streams=streams)
    return b"".join(payload.parts) if isinstance(payload, Pieces) else payload


def dumps_payload(obj: Any, *, for_worker: bool, what: str = "value", modules: Optional[set] = None,
                  streams: Optional[streamed.Streams] = None, framed: bool = False) -> Payload:
    """Serialise ``obj`` for the wire; see the module docstring for ``for_worker``.

    A payload larger than a frame comes back as :class:`~.chunked.Pieces`
    that hold large ``bytes`` values of ``obj`` by reference, not copied;
    so does a smaller one written in pieces when ``framed`` (for a sender
    that puts it into its frame with :func:`~.bulk.encoded`, which joins the
    pieces then: one copy of a 1 MB argument instead of two).

    ``modules``, when given, receives the names of the modules whose
    functions, classes or module objects ``obj`` refers to (a worker must
    be able to import them). ``streams``, when given, keeps the generators
    and remote iterators among ``obj``, which the worker then pulls from the
    caller (:mod:`.streamed`) instead of refusing them. Raises ``TypeError``
    naming ``what`` and the offending type when the value cannot travel: an
    object that must not be copied (a file, a lock, see :mod:`.reducers`),
    or one that neither pickle nor dill can carry.
    """
    if _plain_call(obj) if for_worker else _plain(obj):
        # The fast path: values that hold no code, no class and nothing to refuse.
        return pickle.dumps(obj, PROTOCOL)
    try:
        return _dumps(obj, for_worker, what, modules, streams, framed)
    except (KeyboardInterrupt, SystemExit) as exc:
        if for_worker:
            raise   # in the caller this may be a real Ctrl-C: it stops the program, as it would locally
        # In a worker it came from the value's own __reduce__: a value that cannot travel.
        raise TypeError(f"turbolift cannot serialise the {what}: pickling it raised "
                        f"{type(exc).__name__}: {exc}") from None


def _dumps(obj: Any, for_worker: bool, what: str, modules: Optional[set],
           streams: Optional[streamed.Streams], framed: bool = False) -> Payload:
    buffer = PieceWriter()
    out_of_band = buffers.Collector()
    try:
        _Pickler(buffer, for_worker, modules, streams, out_of_band).dump(obj)
    except reducers.Uncopyable as exc:
        raise TypeError(f"turbolift cannot send the {what}: {exc}") from None
    except (pickle.PicklingError, TypeError, AttributeError) as first:
        # Some objects pickle only through dill's own pickler (e.g. a bound
        # method of a __main__ class instance nested deep in a structure).
        try:
            return _dill_dumps(obj, modules)
        except reducers.Uncopyable as exc:
            raise TypeError(f"turbolift cannot send the {what}: {exc}") from None
        except Exception:
            raise TypeError(
                f"turbolift cannot serialise the {what}: {first}. "
                "Arguments and results of distributed functions must be picklable "
                "(dill is used for lambdas, closures and the classes of your script)."
            ) from first
    if out_of_band.views:
        buffer.parts[:0] = [out_of_band.header(), *out_of_band.views]
        buffer.size += len(buffer.parts[0]) + sum(view.nbytes for view in out_of_band.views)
    return buffer.payload(framed)


def detached(payload: Payload) -> Payload:
    """``payload`` with its own copy of any memory it refers to (out-of-band buffers), for a payload
    that user code may run before it is sent: a generator's next items, a map's next inputs, which
    may reuse the very buffer the payload refers to."""
    if isinstance(payload, Pieces) and any(type(part) is not bytes for part in payload.parts):
        payload.parts = [part if type(part) is bytes else bytes(part) for part in payload.parts]
    return payload


def loads(data: Any) -> Any:
    """Deserialise what :func:`dumps` or :func:`dumps_payload` produced (in either direction);
    received :class:`~.chunked.Pieces` are consumed as they are read."""
    if isinstance(data, Pieces):
        carries = data.parts and buffers.has_buffers(data.parts[0])
        reader = data.reader()
        if not carries:
            return pickle.Unpickler(reader).load()
        reader.read(len(buffers.MAGIC))
        found = buffers.read_buffers(reader.read, reader.readinto, data.size - len(buffers.MAGIC))
        return pickle.Unpickler(reader, buffers=found).load()
    if buffers.has_buffers(data):
        return buffers.loads_inline(data, lambda stream, found: pickle.loads(stream, buffers=found))
    return pickle.loads(data)
