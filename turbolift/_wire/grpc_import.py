"""Importing gRPC with its fork handlers off, in a caller and in a worker.

gRPC's core installs fork handlers unless ``GRPC_ENABLE_FORK_SUPPORT`` says
otherwise, and reads the variable once, from the C environment, while its
extension module initialises. Those handlers only work where no thread is in
gRPC, which is never the case in a caller or a worker (their streams are
always open): at every fork the program or a call made they printed "Other
threads are currently calling into gRPC, skipping fork() handlers" to its
stderr, and in the moments they did run, a call's forked child could crash.
Turbolift's forked children use no gRPC (see :func:`turbolift._runtime.forked_child`).

The variable is set in the C environment only (``os.environ`` never shows
it), and only until gRPC is imported. A program that set it, or imported
gRPC before, keeps its own. This module imports no gRPC until asked.
"""
from __future__ import annotations

import os
import sys
import threading

VARIABLE = "GRPC_ENABLE_FORK_SUPPORT"
_lock = threading.Lock()
_set_by_us = False


def _forked() -> None:
    global _lock
    _lock = threading.Lock()   # (a thread of the parent may have held it: for good, in the child)


os.register_at_fork(after_in_child=_forked)


def prepare() -> None:
    """Set the variable for gRPC's coming import. Call it while this process has one thread, where
    one can (setting a new variable may move the C environment under a thread reading it)."""
    global _set_by_us
    with _lock:
        if not _set_by_us and "grpc" not in sys.modules and VARIABLE not in os.environ:
            os.putenv(VARIABLE, "0")
            _set_by_us = True


def import_grpc() -> None:
    """Import gRPC (once) with its fork handlers off, then take the variable away again, so that
    processes this one starts do not inherit it (removing one moves nothing another thread reads)."""
    global _set_by_us
    if "grpc" in sys.modules and not _set_by_us:
        return
    prepare()
    try:
        import grpc  # noqa: F401
    finally:
        with _lock:
            if _set_by_us:
                os.unsetenv(VARIABLE)
                _set_by_us = False
