"""turbolift: run chosen functions of an ordinary Python program on workers.

Mark a function with :func:`on`. Run the program as usual and everything
stays in-process; run it with ``python -m turbolift`` and the marked
functions run on worker processes over gRPC, with the same API.

Importing this package in local mode imports no gRPC module.
"""
from typing import TYPE_CHECKING

from ._version import __version__

# What ``import turbolift`` offers, loaded on first use: ``python -m turbolift`` starts the
# workers' template before it has imported the rest, and a local program pays only for what
# it uses.
_EXPORTS = {
    "on": "._marker", "TurboliftFunction": "._marker",
    "TLS": "._wire.tls",
    "BundleError": ".errors", "ClusterError": ".errors", "ConfigurationError": ".errors",
    "EnvironmentMismatch": ".errors", "RemoteError": ".errors", "TurboliftError": ".errors",
    "WorkerLost": ".errors",
    "Executor": ".executor",
    "Cluster": ".platforms", "LocalQueue": ".platforms", "Workers": ".platforms",
    "Kubernetes": ".platforms.kubernetes",   # an optional extra
    "as_completed": ".progress",
}

if TYPE_CHECKING:
    from ._marker import TurboliftFunction, on
    from ._wire.tls import TLS
    from .errors import (
        BundleError,
        ClusterError,
        ConfigurationError,
        EnvironmentMismatch,
        RemoteError,
        TurboliftError,
        WorkerLost,
    )
    from .executor import Executor
    from .platforms import Cluster, LocalQueue, Workers
    from .platforms.kubernetes import Kubernetes
    from .progress import as_completed


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'turbolift' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value   # (found directly from now on)
    return value


def __dir__() -> list:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "on", "TurboliftFunction", "Executor", "as_completed", "Cluster", "LocalQueue", "Workers", "Kubernetes",
    "TLS",
    "TurboliftError", "ConfigurationError", "ClusterError", "WorkerLost", "BundleError",
    "EnvironmentMismatch", "RemoteError", "__version__",
]
