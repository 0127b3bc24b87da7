"""The special cases of serialisation: what must not be copied, exceptions, and class identity.

* **Objects that cannot be copied** (open files, locks, sockets,
  generators, threads) are refused with a message that says what to pass
  instead: a copy would silently be something else on the worker (a file
  reopened by name, a new lock that locks nothing the caller holds).
* **Exceptions** are rebuilt without calling ``__init__`` (an exception
  whose ``__init__`` takes other arguments than it passes to ``super()``
  cannot be rebuilt from its ``args``), keeping their attributes, notes,
  ``__cause__`` and ``__context__``.
* **Classes defined in the caller** (in ``__main__`` or inside a function)
  travel by value and keep an id: when a worker sends one back (the class
  of a result, an exception type), the caller gets its very own class, so
  ``isinstance`` and ``except`` keep working, as cloudpickle does for
  dynamic classes.
"""
from __future__ import annotations

import _thread
import io
import secrets
import socket
import threading
import types
import weakref
from typing import Any, Callable, Optional

_LOCKS = (_thread.LockType, type(threading.RLock()))
_IN_MEMORY_FILES = (io.BytesIO, io.StringIO)


class Uncopyable(TypeError):
    """An object that cannot travel to or from a worker."""


def refusal(obj: Any) -> Optional[str]:
    """What to pass instead of ``obj``, which cannot be copied to another process; None if it can be."""
    if isinstance(obj, io.IOBase) and not isinstance(obj, _IN_MEMORY_FILES):
        return ("a copy would reopen the file by name on the worker, or be another file: pass its path, "
                "or its contents (f.read())")
    if isinstance(obj, _LOCKS):
        return "a copy would lock nothing the caller holds: synchronise in the caller, and pass data"
    if isinstance(obj, socket.socket):
        return "pass the address instead, and connect on the worker"
    if isinstance(obj, (types.GeneratorType, types.AsyncGeneratorType, types.CoroutineType)):
        return "pass its items instead (a list), or let the function produce them"
    if isinstance(obj, threading.Thread):
        return "pass the data it works on instead"
    return None


def refuse(obj: Any) -> None:
    """Raise Uncopyable when ``obj`` cannot be copied."""
    reason = refusal(obj)
    if reason is not None:
        raise Uncopyable(f"a {type(obj).__module__}.{type(obj).__qualname__} cannot be sent to a worker: "
                         f"{reason}")


# -- exceptions --------------------------------------------------------------------

def plain_exception(obj: Any) -> bool:
    """True for an exception whose class pickles it the default way (by ``args``)."""
    cls = type(obj)
    return (isinstance(obj, BaseException) and cls.__reduce_ex__ is BaseException.__reduce_ex__
            and cls.__reduce__ is BaseException.__reduce__)


_MEMBER = type(SystemExit.code)   # a slot of a built-in class (member_descriptor)
# Slots sent otherwise (__suppress_context__), set by ``__new__`` from ``args`` (an exception group's
# message and exceptions, read-only), or not at all: AttributeError.obj is whatever object lacked the
# attribute (a module, a socket...), which need not be copyable; locally it is rarely read.
_MEMBERS_NOT_SENT = {"__suppress_context__", "message", "exceptions", "obj"}


def _builtin_members(exc: BaseException) -> Optional[dict]:
    """The slots that built-in exception classes fill in their ``__init__`` (``SystemExit.code``,
    ``StopIteration.value``, ``SyntaxError.lineno``, ``UnicodeError.start``, ``NameError.name``...):
    not in ``args`` or ``__dict__``, so a rebuild without ``__init__`` would leave them None."""
    found = {}
    for klass in type(exc).__mro__:
        if klass.__module__ == "builtins":
            for name, attribute in vars(klass).items():
                if type(attribute) is _MEMBER and name not in _MEMBERS_NOT_SENT:
                    found[name] = getattr(exc, name)
    return found or None


def exception_reduction(exc: BaseException) -> tuple:
    """The reduce tuple that rebuilds ``exc`` without calling its ``__init__``."""
    state = dict(exc.__dict__) if getattr(exc, "__dict__", None) else None
    return (rebuild_exception, (type(exc), exc.args, state, exc.__cause__, exc.__context__,
                                exc.__suppress_context__, _builtin_members(exc)))


def rebuild_exception(cls: type, args: tuple, state: Optional[dict], cause: Any, context: Any,
                      suppress: bool, members: Optional[dict] = None) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    for name, value in (members or {}).items():
        try:
            setattr(exc, name, value)
        except (AttributeError, TypeError):   # (read-only, or a value the slot refuses: as __new__ left it)
            pass
    if state:
        exc.__dict__.update(state)
    exc.__cause__ = cause
    exc.__context__ = context
    exc.__suppress_context__ = suppress
    return exc


# -- enums defined in the caller -----------------------------------------------------
# dill cannot pickle an Enum class by value (uqfoundation/dill#250, #729: a
# RecursionError): one is rebuilt with the functional API from its base,
# members and methods, as cloudpickle does.

_ENUM_MACHINERY = {"__module__", "__qualname__", "__dict__", "__weakref__", "_generate_next_value_",
                   "_member_names_", "_member_map_", "_value2member_map_", "_member_type_", "_value_repr_",
                   "_new_member_", "_use_args_", "_singles_mask_", "_all_bits_", "_flag_mask_",
                   "_inverted_", "_boundary_", "__new__", "__init_subclass__"}


def enum_parts(cls: type) -> tuple:
    """What rebuilds an Enum class: (base, name, qualname, module, members, methods and properties)."""
    import enum

    base = next(b for b in cls.__bases__ if issubclass(b, enum.Enum))
    members = [(name, member._value_) for name, member in cls.__members__.items()]
    kept = (types.FunctionType, classmethod, staticmethod, property)
    extras = {key: value for key, value in vars(cls).items()
              if key not in _ENUM_MACHINERY and key not in cls.__members__
              and (isinstance(value, kept) or key == "__doc__")}
    return base, cls.__name__, cls.__qualname__, cls.__module__, members, extras


def build_enum(parts: tuple) -> type:
    base, name, qualname, module, members, extras = parts
    cls = base(name, members, module=module, qualname=qualname)
    for key, value in extras.items():
        setattr(cls, key, value)
    return cls


# -- classes defined in the caller -------------------------------------------------

_MAX_CLASSES = 10_000
_ids_of: "weakref.WeakKeyDictionary[type, str]" = weakref.WeakKeyDictionary()  # class -> id (both sides)
_caller_classes: dict[str, type] = {}     # id -> class, in the caller: the classes it shipped
_rebuilt: dict[str, tuple] = {}           # id -> (bytes, class), on a worker: the classes it received
_lock = threading.Lock()


def class_id(cls: type) -> str:
    """The id of a class of the caller that travels by value (made on first use)."""
    with _lock:
        found = _ids_of.get(cls)
        if found is None:
            found = _ids_of[cls] = secrets.token_hex(8)
            if len(_caller_classes) >= _MAX_CLASSES:  # a program that makes classes in a loop
                _caller_classes.pop(next(iter(_caller_classes)))
            _caller_classes[found] = cls
        return found


def received_id(cls: type) -> Optional[str]:
    """On a worker: the caller's id of a class that came from the caller, else None."""
    return _ids_of.get(cls)


def rebuild_class(identity: str, load: Callable[[bytes], type], data: bytes) -> type:
    """On a worker: the class ``data`` holds, one class object per id and version whatever the call.

    The caller serialises a class anew whenever it sends it, with what its
    methods read as globals at that moment: the same bytes give the class
    object this worker already made (``isinstance`` holds across calls);
    other bytes (a global one of its methods reads was rebound, a class
    attribute was set) give the class as it now is in the caller, which the
    id then names. In the caller, its own class.
    """
    with _lock:
        own = _caller_classes.get(identity)
        known = _rebuilt.get(identity)
    if own is not None:
        return own
    if known is not None and known[0] == data:
        return known[1]
    cls = load(data)
    with _lock:
        known = _rebuilt.get(identity)
        if known is not None and known[0] == data:   # (another thread made it meanwhile)
            return known[1]
        _rebuilt[identity] = (data, cls)
        _ids_of[cls] = identity
    return cls


def caller_class(identity: str) -> type:
    """In the caller: its own class with this id."""
    with _lock:
        found = _caller_classes.get(identity)
    if found is None:
        raise LookupError(f"a class sent back by a worker (id {identity}) is no longer known in the caller")
    return found
