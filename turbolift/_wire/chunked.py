"""Payloads larger than one frame: held as pieces, cut into Chunk frames, gathered again.

A Session carries a payload larger than ``protocol.FRAME_DATA`` (arguments,
a result, a batch of results, a bundle) as its frame's declared size and
then Chunk frames. Neither side ever joins such a payload into one buffer:

* the sender's pickler writes into a :class:`Pieces` that keeps large
  ``bytes`` values by reference (no serialised copy of a 2 GiB argument),
  and :func:`frames_of` cuts the chunks only as they are sent;
* the receiver keeps the chunks as they arrive (:func:`gather`), and the
  unpickler reads them through :meth:`Pieces.reader`, dropping each chunk
  once it is copied into the value it belongs to.

So memory stays near the value plus a chunk on each side, no message
approaches gRPC's or protobuf's size limits, and no single copy of a large
value runs for seconds in one C call holding the GIL (which would starve
the heartbeats the caller waits for).
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from .protocol import FRAME_DATA

MAX_PAYLOAD = 8 * 1024 ** 3            # what one chunked payload may declare


class ChunkError(Exception):
    """A chunked payload was malformed: more or less than it declared, or too large."""


class Pieces:
    """A payload held as the byte strings it was written or received in, in order.

    Made for payloads larger than ``FRAME_DATA``, and for smaller ones only
    when their sender asked for pieces (``framed=True``: it hands them to
    :func:`~.bulk.encoded`, which joins them once with their frame); other
    small payloads are plain ``bytes``. ``len(payload) <= FRAME_DATA`` tells
    a payload that travels inline in its frame.
    """

    __slots__ = ("parts", "size", "_read")

    def __init__(self, parts: list, size: int) -> None:
        self.parts = parts
        self.size = size
        self._read = False

    def __len__(self) -> int:
        return self.size

    def reader(self) -> "_Reader":
        """A file-like reader for the unpickler; it consumes the pieces (read them once)."""
        if self._read:
            raise RuntimeError("a received payload is read once")
        self._read = True
        parts, self.parts = self.parts, []
        return _Reader(parts)


Payload = Union[bytes, Pieces]


class PieceWriter:
    """The file a pickler writes into: keeps ``bytes`` by reference, copies anything mutable."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list = []
        self.size = 0

    def write(self, data: Any) -> int:
        # The C pickler hands large bytes values over as the objects themselves
        # (immutable: safe to keep); a bytearray or buffer could change before it
        # is sent, so it is copied.
        part = data if type(data) is bytes else bytes(data)
        self.parts.append(part)
        self.size += len(part)
        return len(part)

    def payload(self, framed: bool = False) -> Payload:
        """What was written: bytes, or Pieces when larger than a frame (or ``framed`` and in pieces:
        the frame's encoding then joins them, with no copy of the payload made before)."""
        if len(self.parts) == 1:
            return self.parts[0]
        if self.size <= FRAME_DATA and not framed:
            return b"".join(self.parts)
        return Pieces(self.parts, self.size)


def frames_of(payload: Any, frame_size: int = FRAME_DATA,
              head: Optional[Callable[[int], bytes]] = None) -> Iterator[bytes]:
    """``payload`` (bytes-like or :class:`Pieces`) cut into chunks of ``frame_size`` bytes
    (the last one shorter), each copied only when it is taken; ``head(size)``, when given,
    is put before each chunk in the same copy (an encoded frame's header)."""
    if not isinstance(payload, Pieces) and len(payload) <= frame_size:
        if len(payload):
            yield head(len(payload)) + payload if head else bytes(payload)   # (bytes: no copy)
        return
    parts = payload.parts if isinstance(payload, Pieces) else (payload,)
    pending: list = []
    pending_size = 0
    for part in parts:
        view = memoryview(part)
        offset = 0
        while offset < len(view):
            take = min(frame_size - pending_size, len(view) - offset)
            pending.append(view[offset:offset + take])
            pending_size += take
            offset += take
            if pending_size == frame_size:
                yield b"".join([head(pending_size), *pending] if head else pending)
                pending, pending_size = [], 0
    if pending:
        yield b"".join([head(pending_size), *pending] if head else pending)


def framed(payload: Any) -> Iterator[tuple[bytes, bool, bool]]:
    """``(part, first, last)`` for each frame of ``payload``: at least one, even when it is empty
    (the framing of nested calls and their replies, whose first frame carries the size)."""
    size = len(payload)
    sent = 0
    for part in frames_of(payload) if size else (b"",):
        first = sent == 0
        sent += len(part)
        yield part, first, sent >= size


def gather(size: int, parts: Iterable[bytes]) -> Pieces:
    """The chunks of a payload that declared ``size`` bytes, checked to add up to exactly that.

    Chunks are kept as they arrived, so a sender declaring a huge size and
    sending little costs only what it sent.
    """
    if size > MAX_PAYLOAD:
        raise ChunkError(f"a payload of {size:,} bytes exceeds the limit of {MAX_PAYLOAD:,}")
    received: list = []
    total = 0
    for part in parts:
        total += len(part)
        if total > size:
            raise ChunkError(f"the payload sent more than its declared {size:,} bytes")
        received.append(part)
    if total != size:
        raise ChunkError(f"the payload ended after {total:,} of its declared {size:,} bytes")
    return Pieces(received, size)


class _Reader:
    """Reads a list of byte strings as one file, freeing each once it is read past."""

    def __init__(self, parts: list) -> None:
        self._parts = deque(memoryview(part) for part in parts)

    def readinto(self, buffer: Any) -> int:
        # One call may ask for gigabytes (a large bytes value): it is filled a
        # chunk at a time, so other threads get the GIL between the copies.
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target) and self._parts:
            part = self._parts[0]
            take = min(len(part), len(target) - filled)
            target[filled:filled + take] = part[:take]
            filled += take
            if take == len(part):
                self._parts.popleft()
            else:
                self._parts[0] = part[take:]
        return filled

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = sum(len(part) for part in self._parts)
        buffer = bytearray(size)
        return bytes(memoryview(buffer)[:self.readinto(buffer)])

    def readline(self) -> bytes:
        line = bytearray()
        while self._parts:
            part = self._parts[0]
            end = bytes(part).find(b"\n")   # (only protocol 0's text opcodes read lines)
            if end >= 0:
                line += part[:end + 1]
                if end + 1 == len(part):
                    self._parts.popleft()
                else:
                    self._parts[0] = part[end + 1:]
                return bytes(line)
            line += part
            self._parts.popleft()
        return bytes(line)
