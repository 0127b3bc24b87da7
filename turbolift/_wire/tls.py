"""TLS and mutual TLS through grpc's own credentials.

A worker given a certificate and key serves TLS; given a CA as well it
requires callers to present a certificate signed by that CA (mutual TLS),
which authenticates them. Callers name the CA that signed the workers'
certificates, and their own certificate for mutual TLS.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigurationError


def _read(path: Optional[str], what: str) -> Optional[bytes]:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} {path!r}: {exc}") from None


@dataclass(frozen=True)
class TLS:
    """Paths of PEM files. On a worker: ``cert``+``key`` (and ``ca`` for mutual TLS).
    On a caller: ``ca`` to verify workers (None: the system's roots), and
    ``cert``+``key`` to present for mutual TLS. ``server_name`` overrides the
    name checked against the worker's certificate (e.g. when dialling an IP).
    """

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    server_name: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigurationError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")

    @property
    def mutual(self) -> bool:
        return self.ca is not None

    def server_credentials(self) -> Any:
        import grpc

        if self.cert is None:
            raise ConfigurationError("a TLS worker needs --tls-cert and --tls-key")
        pair = (_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
        return grpc.ssl_server_credentials([pair], root_certificates=_read(self.ca, "TLS CA"),
                                           require_client_auth=self.ca is not None)

    def channel_credentials(self) -> Any:
        import grpc

        return grpc.ssl_channel_credentials(root_certificates=_read(self.ca, "TLS CA"),
                                            private_key=_read(self.key, "TLS key"),
                                            certificate_chain=_read(self.cert, "TLS certificate"))

    def channel_options(self) -> list:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
