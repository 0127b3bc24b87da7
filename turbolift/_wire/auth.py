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
    """``token`` itself, else the contents of ``token_file`` (or ``$TURBOLIFT_TOKEN_FILE``), else None.

    A token file that cannot be read, or holds nothing, is an error: an empty
    token would mean no authentication at all.
    """
    if token is not None:
        return token
    path = token_file or os.environ.get("TURBOLIFT_TOKEN_FILE")
    if not path:
        return None
    try:
        found = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the token file {path!r}: {exc}") from None
    if not found:
        raise ConfigurationError(f"the token file {path!r} is empty: put a secret in it "
                                 "(openssl rand -hex 32 > FILE; chmod 600 FILE)")
    return found


# -- tokens of workers started without one -----------------------------------------
# A worker started without --token-file makes a token of its own and writes it
# to a file only its user can read, named after its address (as Jupyter does
# with its connection files); a caller of the same user finds it there.

def token_directory() -> Path:
    """This user's directory of worker tokens: ``$XDG_RUNTIME_DIR/turbolift``, else under the cache."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "turbolift"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "turbolift" / "tokens"


def token_file_for(address: str) -> Path:
    """Where the worker listening on ``address`` keeps the token it made."""
    host, _, port = address.rpartition(":")
    if host in ("localhost", "[::1]", "::1", "0.0.0.0", ""):
        host = "127.0.0.1"   # one name per port: callers write addresses in several ways
    return token_directory() / f"worker-{host.strip('[]')}-{port}.token"


def discovered_token(address: str) -> Optional[str]:
    """The token a worker of this user made for ``address``, if it wrote one (None otherwise)."""
    path = token_file_for(address)
    try:
        found = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return found or None
