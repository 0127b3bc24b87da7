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
* :func:`bound`, in a program that calls workers: buffers up to
  ``CALLER_MMAP_THRESHOLD`` reused, with what it keeps bounded. A program's threads each get an arena of their
  own, and what every arena keeps adds up: with the workers' settings, 8
  threads receiving 1 MiB results (with deadlines, so that many were held
  at once) left the program 449-483 MiB larger afterwards; glibc's own
  adaptive threshold, 319-357 MiB. So each arena keeps at most
  ``CALLER_TRIM_THRESHOLD`` at its top, and a thread of this module,
  ``turbolift-trim``, hands the free memory inside the arenas back
  (``malloc_trim``) at its next look (every ``TRIM_INTERVAL``) once there
  is enough of it (see :func:`_trim_forever`): 19-22 MiB larger a second
  later in that experiment. Until then a calling program held glibc's mmap
  threshold at its default of 128 KiB (bounded too, 29-69 MiB, but every
  payload over 128 KiB mapped afresh): a 1 MiB result cost it 3.3-4.2 ms
  of CPU, a 1 MiB argument 4.0-4.3 ms; now 1.3-2.0 ms each. Where glibc is
  older than 2.33 (no ``mallinfo2`` to count free heap) it still does.

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
import time
from typing import Any, Optional

MMAP_THRESHOLD = 16 * 1024 * 1024      # over the 4 MiB frames and their copies
TRIM_THRESHOLD = 32 * 1024 * 1024
CALLER_TRIM_THRESHOLD = 4 * 1024 * 1024   # per arena: a few payloads' worth
# A calling program reuses the buffers of payloads up to 1 MiB; the 4 MiB chunk frames of larger ones
# are mapped, so each goes back to the system the moment the unpickler has read it (a 1 GB result: the
# caller's peak 2.1x the payload with them reused, against 1.1x).
CALLER_MMAP_THRESHOLD = 2 * 1024 * 1024
HELD_MMAP_THRESHOLD = 128 * 1024       # glibc's default, held there where the trimmer cannot run
TRIM_INTERVAL = 0.5                    # seconds between the trimmer's looks
TRIM_ABOVE = 16 * 1024 * 1024          # free heap, and growth, worth a trim
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_done: set = set()
_lock = threading.Lock()


def tune() -> bool:
    """A worker's settings (once per process); True if they hold."""
    return _once("tune", ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))


def bound() -> bool:
    """A calling program's settings (once per process): payload buffers reused, free memory handed
    back within about ``TRIM_INTERVAL``; True if they hold."""
    if "bound" in _done:   # (before the lock: a forked child may have inherited it held)
        return True
    with _lock:
        if "bound" in _done:
            return True
        libc = _libc()
        if libc is None:
            return False
        trims = hasattr(libc, "mallinfo2") and hasattr(libc, "malloc_trim") and _resident() is not None
        if not trims:   # glibc before 2.33: no measure of free heap; hold the threshold instead
            return _once("bound", ((_M_MMAP_THRESHOLD, HELD_MMAP_THRESHOLD),), libc)
        libc.mallinfo2.restype = _mallinfo2_struct()
        if not _once("bound", ((_M_MMAP_THRESHOLD, CALLER_MMAP_THRESHOLD),
                               (_M_TRIM_THRESHOLD, CALLER_TRIM_THRESHOLD)), libc):
            return False
        _start_trimmer(libc)
        # A forked child (multiprocessing's default on Linux) inherits the settings but no thread.
        os.register_at_fork(after_in_child=lambda: _start_trimmer(libc))
        return True


def _start_trimmer(libc: Any) -> None:
    threading.Thread(target=_trim_forever, args=(libc,), name="turbolift-trim", daemon=True).start()


def _trim_forever(libc: Any) -> None:
    """Hand free heap back to the system (``malloc_trim``) when there is more than ``TRIM_ABOVE`` of
    it and either the process's resident size or its free heap grew by ``TRIM_ABOVE`` since the
    last trim (or since they were lower).

    Both signs are needed: glibc counts released free chunks as free still, so a burst that
    faults them in and frees them again shows only as resident growth; memory freed after a trim
    made while it was in use shows only as free heap growth. A steady program is not trimmed over
    and over. Counting free heap walks the free chunks with each arena locked; for a program whose
    heap holds very many, the looks are spaced so that they cost under 0.2% of a core.
    """
    wait = threading.Event().wait
    interval = TRIM_INTERVAL
    resident_then = free_then = 0
    while True:
        wait(interval)
        resident = _resident()
        if resident is None:
            return
        began = time.perf_counter()
        free = libc.mallinfo2().fordblks
        interval = max(TRIM_INTERVAL, 500 * (time.perf_counter() - began))
        if free > TRIM_ABOVE and (resident > resident_then + TRIM_ABOVE or free > free_then + TRIM_ABOVE):
            libc.malloc_trim(0)   # (ctypes lets the GIL go meanwhile)
            resident_then, free_then = _resident() or resident, free
        else:
            resident_then, free_then = min(resident_then, resident), min(free_then, free)


@functools.lru_cache(maxsize=None)
def _mallinfo2_struct() -> type:
    """glibc's ``struct mallinfo2`` (every field a ``size_t``)."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]
    return Mallinfo2


def _resident() -> Optional[int]:
    """This process's resident bytes, or None where ``/proc`` does not tell."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _once(name: str, settings: tuple, libc: Optional[Any] = None) -> bool:
    if name not in _done:
        libc = libc or _libc()
        if libc is None or not all(libc.mallopt(option, value) for option, value in settings):
            return False
        _done.add(name)
    return True


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
