"""How a child that a call forks ends (``os.fork`` inside a function a worker runs).

In a plain program such a child runs on from the fork: an exception that
leaves the function (``sys.exit`` included) reaches the program's top level
and ends the child with its exit status. On a worker the frames above the
function are the worker's own, serving the parent's streams: before, the
child's ``SystemExit`` was taken for the call's outcome and answered on the
parent's stream, and the call hung. So when the function returns or raises
in the child, the child ends there, as the plain program's child would at
its top level: its exit handlers run, its standard streams are flushed, and
it exits with ``sys.exit``'s status (1, with the traceback, for another
exception; 0 for a return, which has no program to return to). It leaves
with ``os._exit``: finalising its copies of the parent's gRPC objects would
reset the parent's streams on the sockets they share.

This module imports no gRPC.
"""
from __future__ import annotations

import atexit
import os
import sys
from types import TracebackType
from typing import NoReturn, Optional

_OWN_CODE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep   # turbolift/

forked = False   # True in a child forked while this worker runs calls


def note_fork() -> None:
    """Called in the child at fork."""
    global forked
    forked = True


def exit_status(exc: SystemExit) -> int:
    """The status the interpreter exits with for ``exc`` (printing a non-integer code, as it does)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _users_part(traceback: Optional[TracebackType]) -> Optional[TracebackType]:
    """``traceback`` from the first frame that is not the worker's own (the function's)."""
    while traceback is not None and traceback.tb_frame.f_code.co_filename.startswith(_OWN_CODE):
        traceback = traceback.tb_next
    return traceback


def end_child(exc: Optional[BaseException]) -> NoReturn:
    """End this forked child: the function the call runs returned (``exc`` None) or raised ``exc``."""
    status = 0
    try:
        if isinstance(exc, SystemExit):
            status = exit_status(exc)
        elif exc is not None:
            exc.__traceback__ = _users_part(exc.__traceback__)   # (what excepthook prints)
            sys.excepthook(type(exc), exc, exc.__traceback__)
            status = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:   # (closed or broken by the program: nothing left to say there)
                pass
        os._exit(status)
