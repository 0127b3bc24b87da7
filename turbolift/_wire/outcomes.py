"""What a reply carries back, and how the caller reads it.

A call ends in one of three ways on the wire: a return value (serialised),
an exception the user's function raised (a ``RemoteException``: the
exception itself when it pickles, its type name, message and formatted
traceback), or ``BUNDLE_MISSING`` (the caller uploads the bundle and calls
again). Batches carry a list of ``(ok, value)`` pairs, an exception packed
as the same fields in a dict.
"""
from __future__ import annotations

import os
import traceback
from typing import Any, Optional

from ..errors import RemoteError, RemoteTraceback, TurboliftError
from ..v1 import worker_pb2 as pb
from . import local_paths, serialize

# Frames of turbolift itself are cut from remote tracebacks: the user wants their code.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def pack_exception(exc: BaseException) -> dict:
    """Describe ``exc`` for the wire: the fields of a ``RemoteException`` message.

    Whatever the exception does (a ``__reduce__`` that raises, even a
    BaseException; a ``__str__`` that raises), this returns: every call gets
    an answer. What could not be had is said in its place.
    """
    cls = type(exc)
    type_name = f"{cls.__module__}.{cls.__qualname__}"
    frames = exc.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frames = frames.tb_next
    try:
        message = str(exc)
    except BaseException as failure:
        message = f"<str() of this {type_name} raised {type(failure).__name__}>"
    try:
        tb = "".join(traceback.format_exception(cls, exc, frames))
    except BaseException:
        tb = f"{type_name}: {message}\n(its traceback could not be formatted)\n"
    try:
        payload = serialize.dumps(exc, for_worker=False)
    except BaseException as failure:  # the caller rebuilds a RemoteError instead, and says why
        payload = b""
        try:
            message = f"{message} (it could not be sent back: {type(failure).__name__}: {failure})"
        except BaseException:
            message = f"{message} (it could not be sent back)"
    return {"exception": payload, "type_name": type_name, "message": message, "traceback": tb}


def unpack_exception(packed: dict) -> BaseException:
    """Rebuild a remote exception (fields as :func:`pack_exception` gives them).

    The original type is kept when it can be rebuilt, with its attributes,
    notes, ``__cause__`` and ``__context__``; otherwise the result is a
    :class:`RemoteError` naming the remote type and why. The remote traceback
    (a :class:`RemoteTraceback`) becomes the ``__cause__`` at the end of the
    exception's own chain as a traceback shows it (causes, and the exceptions
    being handled when each was raised): that of the exception itself when it
    has none, as ``concurrent.futures`` does.
    """
    type_name, message = packed["type_name"], packed["message"]
    exc: BaseException
    if not packed["exception"]:
        exc = RemoteError(type_name, message)
    else:
        try:
            exc = serialize.loads(packed["exception"])
            if not isinstance(exc, BaseException):
                exc = RemoteError(type_name, message, "it did not unpickle as an exception")
        except Exception as failure:
            exc = RemoteError(type_name, message, f"its type could not be rebuilt here: "
                                                  f"{type(failure).__name__}: {failure}")
    last, seen = exc, {id(exc)}
    while (earlier := _shown_before(last)) is not None and id(earlier) not in seen:
        last = earlier
        seen.add(id(last))
    last.__cause__ = RemoteTraceback(local_paths.local_traceback(packed["traceback"]))
    return exc


def _shown_before(exc: BaseException) -> Optional[BaseException]:
    """The exception a traceback of ``exc`` shows before it: its cause, else the one being handled
    when it was raised (``__context__``), unless that is suppressed."""
    if exc.__cause__ is not None:
        return exc.__cause__
    return None if exc.__suppress_context__ else exc.__context__


def fields(error: pb.RemoteException) -> dict:
    """A RemoteException message as the dict :func:`unpack_exception` reads."""
    return {"exception": error.exception, "type_name": error.type_name, "message": error.message,
            "traceback": error.traceback}


def value_of(reply: Any, data: Any) -> Any:
    """The return value of a call (``data``: its serialised result), or raise its remote exception.

    ``reply`` is a Session Reply or a unary CallReply: both have ``outcome`` and ``error``.
    """
    if reply.outcome == pb.RETURNED:
        return serialize.loads(data)
    if reply.outcome == pb.RAISED:
        raise unpack_exception(fields(reply.error))
    raise TurboliftError(f"worker sent an unexpected outcome {reply.outcome}")


def batch_of(reply: Any, data: Any, count: int) -> tuple[list, dict, float, int]:
    """``(values, {index: packed exception}, seconds the worker spent, bytes of the results)`` of a
    batch of ``count`` calls; the value of an item that raised is None (:func:`raised` makes its
    exception)."""
    if reply.outcome != pb.RETURNED:
        raise TurboliftError(f"worker sent an unexpected batch outcome {reply.outcome}")
    outcomes = serialize.loads(data)
    if (type(outcomes) is not tuple or len(outcomes) != 2 or type(outcomes[0]) is not list
            or type(outcomes[1]) is not dict):
        raise TurboliftError("worker sent batch results of an unexpected shape")
    if len(outcomes[0]) != count:
        raise TurboliftError(f"worker sent {len(outcomes[0])} results for a batch of {count} calls")
    return outcomes[0], outcomes[1], reply.elapsed_seconds, len(data)


def raised(packed: Any) -> BaseException:
    """The exception a batch item raised, from what :func:`batch_of` gave for it."""
    return unpack_exception(packed)
