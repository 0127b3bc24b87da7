"""Keep glibc's allocator from mapping and unmapping every payload.

A payload of 1 MiB is several buffers of 1 MiB on each side (the pickled
value, the frame, gRPC's copy). glibc serves each buffer over 128 KiB with
a fresh ``mmap`` and returns it with ``munmap`` (and shrinks the heaps of
threads other than the main one as soon as their top is free), so every
call pays the page faults of touching new memory: measured here, a 1 MiB
result cost the worker 3.0-4.1 ms of CPU per call that way and 1.0-1.2 ms
with the limits below (CPU of the worker process per call of a function
returning 1 MiB, 300 calls, alternate runs).

Only workers call it: in the caller, the program's own process, the kept
heap of every thread's arena adds up (the chaos test's caller, 8 threads,
kept 456 MiB more with a 128 MiB trim threshold).

:func:`tune` raises both limits: buffers up to ``MMAP_THRESHOLD`` come from
the heap and are reused, and up to ``TRIM_THRESHOLD`` of free heap is kept
rather than handed back. Larger payloads (100 MB, 1 GB) are still mapped
and unmapped, so the peak and resting memory they leave is unchanged. It
does nothing on other C libraries, or with ``TURBOLIFT_TUNE_MALLOC=0``.
"""
from __future__ import annotations

import os
import sys

MMAP_THRESHOLD = 16 * 1024 * 1024     # over the 4 MiB frames and their copies
TRIM_THRESHOLD = 32 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h

_tuned = False


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they are now raised."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get("TURBOLIFT_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):   # musl and others: not glibc's knobs
            return False
    except (OSError, AttributeError):
        return False
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trimmed = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    _tuned = bool(mapped and trimmed)
    return _tuned
