"""turbolift: run chosen functions of an ordinary Python program on workers.

Mark a function with :func:`on`. Run the program as usual and everything
stays in-process; run it with ``python -m turbolift`` and the marked
functions run on worker processes over gRPC, with the same API.

Importing this package in local mode imports no gRPC module.
"""
from ._marker import TurboliftFunction, on
from ._version import __version__
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
from .progress import as_completed


def __getattr__(name: str):
    # The Kubernetes platform is an optional extra: load its module on first use only.
    if name == "Kubernetes":
        from .platforms.kubernetes import Kubernetes

        return Kubernetes
    raise AttributeError(f"module 'turbolift' has no attribute {name!r}")


__all__ = [
    "on", "TurboliftFunction", "Executor", "as_completed", "Cluster", "LocalQueue", "Workers", "Kubernetes",
    "TLS",
    "TurboliftError", "ConfigurationError", "ClusterError", "WorkerLost", "BundleError",
    "EnvironmentMismatch", "RemoteError", "__version__",
]
