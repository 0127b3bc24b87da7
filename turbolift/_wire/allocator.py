"""glibc's allocator, set for each side's payloads.

A payload of 1 MiB is several buffers of 1 MiB on each side (the pickled
value, the frame, gRPC's copy). Two settings of glibc's ``mallopt``:

* :func:`tune`, in workers: buffers up to ``MMAP_THRESHOLD`` come from the
  heap and are reused, and up to ``TRIM_THRESHOLD`` of free heap is kept
  rather than handed back. Without it glibc maps and unmaps buffers
  afresh, and a call returning 1 MiB cost the worker 3.0-4.1 ms of CPU in
  page faults, against 1.0-1.2 ms with it (CPU of the worker process per
  call, 300 calls, alternate runs). Larger payloads (100 MB, 1 GB) are
  still mapped and unmapped, so the memory they leave is unchanged.
* :func:`bound`, in a program that calls workers: the opposite, since the
  kept heap of every thread's arena adds up in a program's threads. glibc
  raises its mmap threshold by itself once a large buffer is freed; from
  then on 1 MiB results received in 8 threads left the program 555-659 MiB
  larger after 1,920 calls, and growing. Held at glibc's own default of
  128 KiB, 44-50 MiB. It costs the page faults of fresh memory for each
  payload over 128 KiB.

Both do nothing on other C libraries, without ctypes, with
``TURBOLIFT_TUNE_MALLOC=0``, or when the environment sets glibc's malloc
itself (``MALLOC_*_`` variables, ``glibc.malloc`` tunables): the user's
choice stands.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

MMAP_THRESHOLD = 16 * 1024 * 1024      # over the 4 MiB frames and their copies
TRIM_THRESHOLD = 32 * 1024 * 1024
CALLER_MMAP_THRESHOLD = 128 * 1024     # glibc's default, held there
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h

_done: set = set()


def tune() -> bool:
    """A worker's settings (once per process); True if they hold."""
    return _once("tune", ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))


def bound() -> bool:
    """A calling program's setting (once per process): large buffers go back to the system when
    freed; True if it holds."""
    return _once("bound", ((_M_MMAP_THRESHOLD, CALLER_MMAP_THRESHOLD),))


def _once(name: str, settings: tuple) -> bool:
    if name not in _done:
        mallopt = _mallopt()
        if mallopt is None or not all(mallopt(option, value) for option, value in settings):
            return False
        _done.add(name)
    return True


def _mallopt() -> Optional[Any]:
    """glibc's ``mallopt``, or None (another C library or system, or switched off)."""
    if os.environ.get("TURBOLIFT_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    if any(name.startswith("MALLOC_") for name in os.environ) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):   # musl and others: not glibc's knobs
            return None
        return libc.mallopt
    except (ImportError, OSError, AttributeError):
        return None
