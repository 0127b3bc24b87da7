"""Sizes and durations as people read them, for the reports of the command line."""
from __future__ import annotations


def size(count: float) -> str:
    """``938 B``, ``1.5 KB``, ``43.8 MB``: decimal units, as the benchmarks report rates."""
    units = ("B", "KB", "MB", "GB")
    index = 0
    while count >= 1000 and index < len(units) - 1:
        count /= 1000
        index += 1
    return f"{count:.0f} B" if index == 0 else f"{count:.1f} {units[index]}"


def duration(seconds: float) -> str:
    """``85 µs``, ``12.2 ms``, ``1.55 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
