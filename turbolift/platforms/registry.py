"""From a cluster URL to a platform: a table keyed by the URL's scheme.

Built-in schemes map to the classes of this package (imported only when
used, so that ``import turbolift`` never loads the Kubernetes platform).
Other packages add platforms through the ``turbolift.platforms`` entry
point group, as Dask's comm backends do: an entry point named ``myscheme``
that points at a callable taking the URL and returning a
:class:`~turbolift.platforms.base.Cluster`. :func:`register` does the same
at run time.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Cluster

ENTRY_POINT_GROUP = "turbolift.platforms"

# scheme -> "module:attribute" of a callable URL -> Cluster
_BUILTIN = {
    "local": "turbolift.platforms.registry:local_from_url",
    "grpc": "turbolift.platforms.static:Workers.from_url",
    "grpcs": "turbolift.platforms.static:Workers.from_url",
    "k8s": "turbolift.platforms.kubernetes:Kubernetes.from_url",
    "kubernetes": "turbolift.platforms.kubernetes:Kubernetes.from_url",
}
_registered: dict[str, Callable[[str], Cluster]] = {}


def register(scheme: str, factory: Callable[[str], Cluster]) -> None:
    """Make ``scheme://...`` URLs build clusters with ``factory(url)``."""
    _registered[scheme] = factory


def local_from_url(url: str, workers: Optional[int] = None) -> Cluster:
    """``local`` or ``local:N``."""
    from .local import LocalQueue

    count = url.partition(":")[2]
    if count and not count.isdigit():
        raise ConfigurationError(f"cluster URL {url!r}: write 'local' or 'local:N' with N a number")
    return LocalQueue(workers=int(count) if count else workers)


def _load(target: str) -> Callable[..., Cluster]:
    module_name, _, attribute = target.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _from_entry_points(scheme: str) -> Optional[Callable[[str], Cluster]]:
    import importlib_metadata

    for entry in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        return entry.load()
    return None


def resolve(spec: object, workers: Optional[int] = None) -> Cluster:
    """Turn a cluster object or URL into a :class:`Cluster`.

    URLs: ``local``, ``local:N``, ``grpc://host:port[,host:port...][?token_file=F]``,
    ``grpcs://...``, ``k8s://NAMESPACE?image=IMAGE&replicas=N...``, and the
    schemes of installed platform plug-ins. None means a local cluster of
    ``workers`` (default: one per CPU).
    """
    if isinstance(spec, Cluster):
        return spec
    if spec is None or spec == "":
        spec = "local"
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"a cluster must be a Cluster object or a URL string, got {type(spec).__name__}")
    scheme = "local" if spec == "local" or spec.startswith("local:") else urlsplit(spec).scheme
    if scheme == "local":
        return local_from_url(spec, workers)
    factory = _registered.get(scheme)
    if factory is None and scheme in _BUILTIN:
        factory = _load(_BUILTIN[scheme])
    if factory is None and scheme:
        factory = _from_entry_points(scheme)
    if factory is None:
        raise ConfigurationError(
            f"unknown cluster URL {spec!r}; use 'local', 'local:N', 'grpc://host:port,host:port', "
            "'grpcs://host:port?ca=ca.pem' or 'k8s://NAMESPACE?image=IMAGE', or install the platform "
            f"that provides {scheme + '://' if scheme else 'it'}")
    return factory(spec)
