"""Who may reach a worker: loopback addresses, and the rule that beyond them callers authenticate."""
from __future__ import annotations

from typing import Optional

from .._wire.tls import TLS
from ..errors import ConfigurationError

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def is_loopback(listen: str) -> bool:
    if listen.startswith("unix:"):
        return True
    host = listen.rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def check_exposure(listen: str, token: Optional[str], tls: Optional[TLS]) -> None:
    """Refuse to serve beyond loopback unless callers are authenticated.

    A token, or mutual TLS (a CA that client certificates must chain to),
    authenticates callers; TLS without client certificates only encrypts,
    so alone it is not enough.
    """
    if is_loopback(listen) or token or (tls is not None and tls.mutual):
        return
    raise ConfigurationError(
        f"refusing to listen on {listen} without authentication: a worker runs any code its callers "
        "send. Give it a token (--token-file FILE, the same file the callers use) or mutual TLS "
        "(--tls-cert, --tls-key and --tls-ca), or listen on 127.0.0.1.")
