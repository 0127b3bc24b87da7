"""Tokens: how a caller presents one, and where both sides read it from.

The worker checks the token in a server interceptor before any request is
parsed (:mod:`turbolift._worker.interceptor`); the caller sends it as call
metadata. Nothing here imports gRPC.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import ConfigurationError

HEADER = "authorization"
# The standard health service stays open so that probes (which carry no token)
# reach it; Sessions prove the token in their handshake instead of carrying it.
OPEN_METHOD_PREFIX = "/grpc.health.v1.Health/"
SESSION_METHOD = "/turbolift.v1.Worker/Session"


def metadata_for(token: Optional[str]) -> tuple:
    """Call metadata that carries ``token`` (empty when there is none)."""
    return ((HEADER, f"Bearer {token}"),) if token else ()


def read_token(token: Optional[str] = None, token_file: Optional[str] = None) -> Optional[str]:
    """``token`` itself, else the contents of ``token_file`` (or ``$TURBOLIFT_TOKEN_FILE``), else None."""
    if token is not None:
        return token
    path = token_file or os.environ.get("TURBOLIFT_TOKEN_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the token file {path!r}: {exc}") from exc
