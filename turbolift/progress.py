"""Progress of a ``map`` or of ``as_completed``: items done, rate and time left, on stderr.

tqdm draws the bar when it is installed (``pip install turbolift[progress]``);
otherwise one plain line is rewritten in place. Nothing is printed when
stderr is not a terminal, unless asked for with ``progress="always"``.
``TURBOLIFT_PROGRESS=1`` (or ``always``) turns progress on for every map
of a program that does not say otherwise. Works the same in local mode.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional, Union

Progress = Union[bool, str, None]
REDRAW_SECONDS = 0.1      # the plain line is redrawn at most this often


def wanted(progress: Progress) -> bool:
    """Whether to show progress: ``progress`` itself, else ``$TURBOLIFT_PROGRESS``; "always" shows
    it even when stderr is not a terminal."""
    if progress is None:
        progress = os.environ.get("TURBOLIFT_PROGRESS", "").strip().lower() or False
        if progress in ("0", "false", "no", "off"):
            progress = False
    if progress == "always":
        return True
    if progress not in (False, True, "1", "true", "yes", "on"):
        raise ValueError(f"progress must be True, False or 'always', not {progress!r}")
    return bool(progress) and _stderr_is_a_terminal()


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def total_of(iterables: tuple) -> Optional[int]:
    """How many items ``zip(*iterables)`` gives, when every iterable knows its length."""
    try:
        return min(len(iterable) for iterable in iterables) if iterables else 0
    except TypeError:
        return None


def track(items: Iterable, total: Optional[int], label: str) -> Iterator:
    """``items`` as they are consumed, counted on a progress bar (callers ask :func:`wanted` first)."""
    bar = _bar(total, label)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def as_completed(futures: Iterable[cf.Future], timeout: Optional[float] = None, *,
                 progress: Progress = False) -> Iterator[cf.Future]:
    """:func:`concurrent.futures.as_completed`, with a progress bar when asked for."""
    futures = list(futures)
    done = cf.as_completed(futures, timeout=timeout)
    return track(done, len(futures), "as_completed") if wanted(progress) else done


def _bar(total: Optional[int], label: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainLine(total, label)
    return tqdm(total=total, desc=label, unit="item", file=sys.stderr, dynamic_ncols=True)


class _PlainLine:
    """The fallback: ``label: 120/2000 items, 850/s, 2.2 s left``, rewritten in place."""

    def __init__(self, total: Optional[int], label: str) -> None:
        self._total = total
        self._label = label
        self._done = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._draw()

    def update(self, count: int) -> None:
        self._done += count
        if time.monotonic() - self._drawn >= REDRAW_SECONDS or self._done == self._total:
            self._draw()

    def close(self) -> None:
        self._draw()
        sys.stderr.write("\n")
        sys.stderr.flush()

    def _draw(self) -> None:
        now = time.monotonic()
        self._drawn = now
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        of = f"/{self._total}" if self._total is not None else ""
        line = f"{self._label}: {self._done}{of} items"
        if self._done:
            line += f", {rate:,.0f}/s"
            if self._total is not None and rate > 0:
                line += f", {(self._total - self._done) / rate:.1f} s left"
        sys.stderr.write("\r" + line + "\x1b[K")
        sys.stderr.flush()
