"""Large payloads, streamed in chunks on both sides of the wire.

Arguments or results larger than ``INLINE_LIMIT`` do not travel inside a
Call message: the caller uploads them with ``PutBlob`` (the worker writes
the chunks into one preallocated buffer) and names the blob in the call;
the worker keeps a large result as a blob the caller fetches with
``GetBlob``. Memory stays bounded to the payload plus one chunk per side,
and no message approaches gRPC's or protobuf's size limits.
"""
from __future__ import annotations

import secrets
import threading
import time
from typing import Iterable, Iterator

INLINE_LIMIT = 4 * 1024 * 1024        # larger payloads travel as blobs
CHUNK = 1024 * 1024
MAX_BLOB = 8 * 1024 ** 3               # what one upload may declare
EXPIRY_SECONDS = 600.0                 # an unclaimed blob is dropped after this


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


class BlobStore:
    """The worker's blobs in memory, each claimed once, unclaimed ones expiring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[float, "bytes | bytearray"]] = {}

    def put(self, data: "bytes | bytearray") -> str:
        blob_id = secrets.token_hex(16)
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, (t, _) in self._blobs.items() if now - t > EXPIRY_SECONDS]:
                del self._blobs[stale]
            self._blobs[blob_id] = (now, data)
        return blob_id

    def take(self, blob_id: str) -> "bytes | bytearray":
        with self._lock:
            found = self._blobs.pop(blob_id, None)
        if found is None:
            raise BlobError(f"no blob {blob_id[:64]!r} on this worker: it expired, was already used, or "
                            "was uploaded to another worker")
        return found[1]
