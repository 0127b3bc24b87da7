"""Peak resident memory of processes, from ``/proc/PID/status`` (Linux).

``VmHWM`` is a process's resident-set high-water mark. Writing ``5`` to
``/proc/PID/clear_refs`` resets it to the current resident size (Linux
4.0+, own processes), which lets one process's peak be measured per phase.
Where the reset is refused, the mark keeps growing from process start and
:func:`reset_peak` says so by returning False.
"""
from __future__ import annotations

from typing import Optional


def _status_kib(pid: int, field: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_bytes(pid: int) -> Optional[int]:
    """``VmHWM`` of ``pid`` in bytes, or None when unreadable."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024


def resident_bytes(pid: int) -> Optional[int]:
    """``VmRSS`` of ``pid`` in bytes, or None when unreadable."""
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


def reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` of ``pid`` to its current resident size; False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def available_bytes() -> Optional[int]:
    """``MemAvailable`` of this machine in bytes, or None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
