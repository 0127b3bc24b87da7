"""The worker's blobs: large arguments received and large results kept for fetching."""
from __future__ import annotations

import secrets
import threading
import time

from .._wire.blobs import BlobError

EXPIRY_SECONDS = 600.0                 # an unclaimed blob is dropped after this


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
