"""Where workers come from.

A platform is a :class:`Cluster` (the interface, in :mod:`.base`):
:class:`LocalQueue` runs worker processes on this machine (:mod:`.local`),
:class:`Workers` names workers started by hand (:mod:`.static`), and
:class:`~turbolift.platforms.kubernetes.Kubernetes` runs them as pods
(:mod:`.kubernetes`, loaded only when used). :func:`resolve` turns a URL into
a cluster through the table in :mod:`.registry`. Importing this package
imports no gRPC.
"""
from .._worker.launcher import default_cache_dir
from .base import Cluster
from .local import LocalQueue
from .registry import register, resolve
from .static import Workers

__all__ = ["Cluster", "LocalQueue", "Workers", "resolve", "register", "default_cache_dir"]
