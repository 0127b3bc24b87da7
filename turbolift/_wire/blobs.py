"""Large payloads, streamed in chunks on both sides of the wire.

Arguments or results larger than ``INLINE_LIMIT`` do not travel inside a
Call message: the caller uploads them with ``PutBlob`` (the worker writes
the chunks into one preallocated buffer) and names the blob in the call;
the worker keeps a large result as a blob the caller fetches with
``GetBlob``. Memory stays bounded to the payload plus one chunk per side,
and no message approaches gRPC's or protobuf's size limits.
"""
from __future__ import annotations

from typing import Iterable, Iterator

INLINE_LIMIT = 4 * 1024 * 1024        # larger payloads travel as blobs
CHUNK = 1024 * 1024
MAX_BLOB = 8 * 1024 ** 3               # what one upload may declare


class BlobError(Exception):
    """A blob upload was malformed, or a named blob does not exist."""


def chunks(data: "bytes | bytearray | memoryview") -> Iterator[memoryview]:
    """Slices of ``data`` of at most ``CHUNK`` bytes (at least one, even if empty)."""
    view = memoryview(data)
    if len(view) == 0:
        yield view
    for start in range(0, len(view), CHUNK):
        yield view[start:start + CHUNK]


def assemble(size: int, parts: Iterable[bytes]) -> bytearray:
    """Concatenate ``parts`` into one buffer of exactly ``size`` bytes.

    The buffer grows with the data that actually arrives (realloc of a large
    block moves no bytes on Linux), so a sender declaring a huge size and
    sending little costs little.
    """
    if size > MAX_BLOB:
        raise BlobError(f"a blob of {size:,} bytes exceeds the limit of {MAX_BLOB:,}")
    buffer = bytearray()
    for part in parts:
        if len(buffer) + len(part) > size:
            raise BlobError(f"the blob sent more than its declared {size:,} bytes")
        buffer += part
    if len(buffer) != size:
        raise BlobError(f"the blob ended after {len(buffer):,} of its declared {size:,} bytes")
    return buffer
