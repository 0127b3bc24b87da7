"""The Session handshake: each side proves it holds the token without sending it.

Both sides send a fresh 32-byte nonce; each proves knowledge of the token
with an HMAC-SHA256 over both nonces, labelled by direction so that one
side's proof can never be replayed as the other's. The worker proves first:
a caller sends nothing secret and unpickles nothing before the peer has
shown it holds the token (a process that took over a worker's address while
it restarted cannot). Fresh nonces per stream defeat replay.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Optional

NONCE_BYTES = 32
_WORKER = b"turbolift-worker"
_CALLER = b"turbolift-caller"


def nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def _proof(token: str, label: bytes, caller_nonce: bytes, worker_nonce: bytes) -> bytes:
    return hmac.new(token.encode(), label + caller_nonce + worker_nonce, hashlib.sha256).digest()


def worker_proof(token: Optional[str], caller_nonce: bytes, worker_nonce: bytes) -> bytes:
    """What the worker sends: empty when it has no token."""
    return _proof(token, _WORKER, caller_nonce, worker_nonce) if token else b""


def caller_proof(token: Optional[str], caller_nonce: bytes, worker_nonce: bytes) -> bytes:
    """What the caller sends once the worker's proof checked out: empty without a token."""
    return _proof(token, _CALLER, caller_nonce, worker_nonce) if token else b""


def verify(expected: bytes, presented: bytes) -> bool:
    """Constant-time comparison of two proofs."""
    return hmac.compare_digest(expected, presented)
