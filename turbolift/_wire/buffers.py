"""Large buffers (numpy arrays: what pickles as a ``PickleBuffer``) carried out of band: pickle protocol 5.

In band, the pickler copies an array's memory into its output, so the
sender holds the array twice until the payload is sent. Out of band, the
payload refers to the array's own memory, which is read as the chunk
frames are cut (as locally, a call sees the array as it is when its bytes
are read: mutating an argument while its call is in flight is one of the
listed inherent differences).

A payload with such buffers is laid out as::

    MAGIC  count:u32  (size:u64 readonly:u8) * count  buffer * count  pickle

Buffers come before the pickle stream because the unpickler takes them
when it starts. The receiver copies each buffer once, into a ``bytearray``
of its own (a writable array comes back writable, a read-only one
read-only), as pickle does for an in-band buffer; the pickle stream then
rebuilds the objects on those buffers without another copy. A payload
without such buffers is a plain pickle stream, which never starts with
``MAGIC`` (protocol 5 starts with ``\\x80``).
"""
from __future__ import annotations

import pickle
import struct
from typing import Any, Callable

MAGIC = b"\xffTL5"            # 0xff is no pickle opcode
OUT_OF_BAND = 64 * 1024       # smaller buffers stay in the pickle stream
MAX_BUFFERS = 1 << 20
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<QB")


class Collector:
    """The ``buffer_callback`` of a pickler: keeps large contiguous buffers out of band."""

    __slots__ = ("views",)

    def __init__(self) -> None:
        self.views: list = []

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:       # not contiguous: pickle copies it in band
            return True
        if view.nbytes < OUT_OF_BAND:
            return True
        self.views.append(view)
        return False              # out of band

    def header(self) -> bytes:
        entries = b"".join(_ENTRY.pack(view.nbytes, view.readonly) for view in self.views)
        return MAGIC + _COUNT.pack(len(self.views)) + entries


def has_buffers(head: bytes) -> bool:
    """True when a payload starting with ``head`` (its first 4 bytes at least) carries buffers."""
    return bytes(head[:len(MAGIC)]) == MAGIC


def read_buffers(read: Callable[[int], bytes], readinto: Callable[[Any], int], available: int) -> list:
    """The buffers of a payload of ``available`` bytes after its ``MAGIC``: each a ``bytearray`` of its
    own (a read-only view of one for a read-only buffer). ``ValueError`` when it is malformed, before
    anything larger than the payload is allocated."""
    (count,) = _COUNT.unpack(_exactly(read, _COUNT.size))
    if count > MAX_BUFFERS or _COUNT.size + count * _ENTRY.size > available:
        raise ValueError(f"a payload of {available:,} bytes declared {count:,} out-of-band buffers")
    entries = [_ENTRY.unpack(_exactly(read, _ENTRY.size)) for _ in range(count)]
    declared = sum(size for size, _ in entries)
    if declared > available - _COUNT.size - count * _ENTRY.size:
        raise ValueError(f"a payload of {available:,} bytes declared {declared:,} bytes of buffers")
    buffers: list = []
    for size, readonly in entries:
        buffer = bytearray(size)
        if readinto(buffer) != size:
            raise ValueError("a payload ended inside one of its out-of-band buffers")
        buffers.append(memoryview(buffer).toreadonly() if readonly else buffer)
    return buffers


def _exactly(read: Callable[[int], bytes], size: int) -> bytes:
    data = read(size)
    if len(data) != size:
        raise ValueError("a payload ended inside its out-of-band buffer table")
    return data


def loads_inline(data: Any, load: Callable[..., Any]) -> Any:
    """``load(stream, buffers)`` of a payload held in one buffer that :func:`has_buffers`: the
    buffers are copied out of ``data``, the pickle stream is read in place."""
    view = memoryview(data).cast("B")
    at = len(MAGIC)

    def read(size: int) -> bytes:
        nonlocal at
        piece = view[at:at + size]
        at += len(piece)
        return bytes(piece)

    def readinto(target: bytearray) -> int:
        nonlocal at
        piece = view[at:at + len(target)]
        target[:len(piece)] = piece
        at += len(piece)
        return len(piece)

    buffers = read_buffers(read, readinto, len(view) - at)
    return load(view[at:], buffers)
