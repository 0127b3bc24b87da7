"""A call reads its caller's standard input (``input()``, ``sys.stdin.readline()``), as it would locally.

A worker's own standard input is the pipe its program watches to know the
worker must leave: a call that read it would wait for ever. So ``sys.stdin``
on a worker stands in for the caller's: a read by a thread that runs a call
asks the caller for it (a NestedCall with ``stdin`` set, on the call's
stream), and the caller reads its own ``sys.stdin`` then. What the call
printed so far is sent first, so that a prompt shows before the read waits.
A read no call makes (a module reading at import, repeating the program's
import; a thread the call started) meets the end of the input at once: the
worker's own must never be read.
"""
from __future__ import annotations

import io
import sys
from typing import Any

from .nested import running_calls


class CallerStdin(io.TextIOBase):
    """Stands in for ``sys.stdin`` on a worker (see the module's docstring)."""

    def __init__(self, original: Any) -> None:
        self._original = original

    def _read(self, method: str, size: int) -> Any:
        calls, ticket = running_calls()
        if calls is None:
            return b"" if method.startswith("buffer.") else ""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        return calls.read_stdin(method, -1 if size is None or size < 0 else int(size), ticket).result()

    def readline(self, size: Any = -1) -> str:   # type: ignore[override]
        return self._read("readline", size)

    def read(self, size: Any = -1) -> str:
        return self._read("read", size)

    def readable(self) -> bool:
        return True

    @property
    def buffer(self) -> "_CallerStdinBytes":   # sys.stdin.buffer.read(): bytes, asked of the caller too
        return _CallerStdinBytes(self)

    # (TextIOBase defines these as None: ask the real stream, as for anything else)
    encoding = property(lambda self: getattr(self._original, "encoding", "utf-8"))
    errors = property(lambda self: getattr(self._original, "errors", "strict"))
    newlines = property(lambda self: getattr(self._original, "newlines", None))

    def __getattr__(self, name: str) -> Any:   # encoding, fileno, isatty ... as the real stream has them
        return getattr(self._original, name)


class _CallerStdinBytes(io.RawIOBase):
    """``sys.stdin.buffer`` of :class:`CallerStdin`: reads the caller's ``sys.stdin.buffer``."""

    def __init__(self, text: CallerStdin) -> None:
        self._text = text

    def readline(self, size: Any = -1) -> bytes:   # type: ignore[override]
        return self._text._read("buffer.readline", size)

    def read(self, size: Any = -1) -> bytes:   # type: ignore[override]
        return self._text._read("buffer.read", size)

    def readinto(self, buffer: Any) -> int:   # (pickle.load and others read into a buffer)
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


def install() -> None:
    """Put the stand-in in place (once per worker process)."""
    if not isinstance(sys.stdin, CallerStdin):
        sys.stdin = CallerStdin(sys.stdin)
