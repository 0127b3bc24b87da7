"""Workers started by hand, at addresses the user gives (``grpc://`` and ``grpcs://``)."""
from __future__ import annotations

from typing import Optional
from urllib.parse import parse_qs, urlsplit

from .._wire.auth import read_token
from .._wire.tls import TLS
from ..errors import ConfigurationError
from .base import Cluster


class Workers(Cluster):
    """Workers started by hand (``turbolift worker``) at known addresses.

    ``Workers("h1:50051", "h2:50051", token_file="t")``; the URL form is
    ``grpc://h1:50051,h2:50051?token_file=t``. Over TLS:
    ``Workers(..., tls=TLS(ca="ca.pem"))`` or ``grpcs://h1:50051?ca=ca.pem``,
    adding ``cert=`` and ``key=`` for mutual TLS.
    """

    def __init__(self, *addresses: str, token: Optional[str] = None,
                 token_file: Optional[str] = None, tls: Optional[TLS] = None,
                 ready_timeout: float = 10.0) -> None:
        super().__init__()
        if not addresses:
            raise ConfigurationError("Workers() needs at least one address such as 'host:50051'")
        for address in addresses:
            if not address.startswith("unix:") and ":" not in address:
                raise ConfigurationError(f"worker address {address!r} has no port; write it as host:port")
        self.addresses = list(addresses)
        self.token = read_token(token, token_file)
        self.tls = tls
        self.ready_timeout = ready_timeout  # started by hand: they should be up already

    @classmethod
    def from_url(cls, url: str) -> "Workers":
        """``grpc://h:p,h:p?token_file=F`` or ``grpcs://...&ca=F&cert=F&key=F&server_name=N``."""
        parts = urlsplit(url)
        hosts = [h for h in parts.netloc.split(",") if h]
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        known = {"token_file"} | ({"ca", "cert", "key", "server_name"} if parts.scheme == "grpcs" else set())
        unknown = sorted(set(query) - known)
        if unknown:
            raise ConfigurationError(f"cluster URL {url!r}: unknown parameter(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(sorted(known))}")
        tls = None
        if parts.scheme == "grpcs":
            tls = TLS(ca=query.get("ca"), cert=query.get("cert"), key=query.get("key"),
                      server_name=query.get("server_name"))
        return cls(*hosts, token_file=query.get("token_file"), tls=tls)

    def start(self) -> None:
        pass

    def wait_ready(self, timeout: float) -> list[str]:
        return list(self.addresses)

    def stop(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"Workers({', '.join(map(repr, self.addresses))})"
