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
* :func:`bound`, in a program that calls workers: the same reuse, with
  what it keeps bounded. A program's threads each get an arena of their
  own, and what every arena keeps adds up: with the workers' settings, 8
  threads receiving 1 MiB results (with deadlines, so that many were held
  at once) left the program 449-483 MiB larger afterwards; glibc's own
  adaptive threshold, 319-357 MiB. So each arena keeps at most
  ``CALLER_TRIM_THRESHOLD`` at its top, and a thread of this module,
  ``turbolift-trim``, hands the free memory inside the arenas back
  (``malloc_trim``) within ``TRIM_INTERVAL`` of its appearing: 17 MiB
  larger in that experiment. Before it, the program held glibc's mmap
  threshold at its default of 128 KiB (bounded, 29-69 MiB, but every
  payload over 128 KiB mapped afresh): a 1 MiB result cost the program
  3.3-4.2 ms of CPU, a 1 MiB argument 4.0-4.3 ms; now 1.3-1.7 ms each.

Both do nothing on other C libraries, without ctypes, with
``TURBOLIFT_TUNE_MALLOC=0``, or when the environment sets glibc's malloc
itself (``MALLOC_*_`` variables, ``glibc.malloc`` tunables): the user's
choice stands.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any, Optional

MMAP_THRESHOLD = 16 * 1024 * 1024      # over the 4 MiB frames and their copies
TRIM_THRESHOLD = 32 * 1024 * 1024
CALLER_TRIM_THRESHOLD = 4 * 1024 * 1024   # per arena: a few payloads' worth
TRIM_INTERVAL = 0.5                    # seconds between the trimmer's looks
TRIM_ABOVE = 16 * 1024 * 1024          # free heap worth handing back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h

_done: set = set()


def tune() -> bool:
    """A worker's settings (once per process); True if they hold."""
    return _once("tune", ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))


def bound() -> bool:
    """A calling program's settings (once per process): payload buffers reused, free memory handed
    back within ``TRIM_INTERVAL``; True if they hold (with the trimmer running)."""
    if "bound" in _done:
        return True
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2") or not hasattr(libc, "malloc_trim"):
        return False   # (glibc before 2.33: no reliable measure of free heap; leave it as it is)
    libc.mallinfo2.restype = _mallinfo2_struct()
    if not _once("bound", ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, CALLER_TRIM_THRESHOLD))):
        return False
    threading.Thread(target=_trim_forever, args=(libc,), name="turbolift-trim", daemon=True).start()
    return True


def _trim_forever(libc: Any) -> None:
    """Hand free heap back to the system whenever there is more of it than at the last look.

    ``malloc_trim`` releases the pages of free chunks inside every arena (each arena's top is
    bounded by its trim threshold). Free bytes stay counted as free after it, so a trim happens only
    when they grew by a payload or more: an idle or steady program is not trimmed over and over.
    """
    trimmed_at = 0
    wait = threading.Event().wait
    while True:
        wait(TRIM_INTERVAL)
        free = libc.mallinfo2().fordblks
        if free > TRIM_ABOVE and free > trimmed_at + CALLER_TRIM_THRESHOLD:
            libc.malloc_trim(0)   # (ctypes lets the GIL go meanwhile)
            trimmed_at = free
        elif free < trimmed_at:
            trimmed_at = free


def _once(name: str, settings: tuple) -> bool:
    if name not in _done:
        libc = _libc()
        if libc is None or not all(libc.mallopt(option, value) for option, value in settings):
            return False
        _done.add(name)
    return True


@functools.lru_cache(maxsize=None)
def _mallinfo2_struct() -> type:
    """glibc's ``struct mallinfo2`` (every field a ``size_t``)."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]
    return Mallinfo2


def _libc() -> Optional[Any]:
    """glibc, or None (another C library or system, or switched off)."""
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
    except (ImportError, OSError, AttributeError):
        return None
    return libc
