"""Exceptions that turbolift raises in the caller.

An exception raised by a distributed function is re-raised in the caller with
its own type; the classes here are for what goes wrong around the call.
"""
from __future__ import annotations


class TurboliftError(Exception):
    """Base class of every error turbolift itself raises."""


class ConfigurationError(TurboliftError, ValueError):
    """A cluster URL, option or configuration value is not valid."""


class ClusterError(TurboliftError):
    """Workers could not be started, reached or made ready."""


class WorkerLost(TurboliftError):
    """The worker running a call went away and no retry was left.

    ``worker`` names the address of the last worker tried.
    """

    def __init__(self, message: str, worker: str = "") -> None:
        super().__init__(message)
        self.worker = worker


class BundleError(TurboliftError):
    """A bundle could not be built, shipped, verified or loaded."""


class EnvironmentMismatch(BundleError):
    """A worker's environment differs from the caller's pinned environment.

    ``differences`` lists ``(what, wanted, found)`` triples.
    """

    def __init__(self, message: str, differences: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.differences = list(differences or [])


class RemoteError(TurboliftError):
    """A remote exception whose own type could not be rebuilt in the caller.

    ``type_name`` is the remote type's ``module.QualName``; the remote
    traceback is attached as ``__cause__``, as for every remote exception.
    """

    def __init__(self, type_name: str, message: str, reason: str = "") -> None:
        super().__init__(f"{type_name}: {message}" + (f" ({reason})" if reason else ""))
        self.type_name = type_name
        self.remote_message = message
        self.reason = reason


class RemoteTraceback(Exception):
    """Carries the formatted traceback of a remote exception.

    Attached as ``__cause__`` of the re-raised exception, as
    ``concurrent.futures.ProcessPoolExecutor`` does, so that the caller's
    traceback shows where the exception happened on the worker.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def raised_on_worker(exc: BaseException) -> bool:
    """True for an exception the marked function raised on a worker: a RemoteTraceback is among its
    causes. Its traceback in the caller holds only turbolift's frames, which the caller cuts where
    the program sees it (its own frames stay; the worker's are among the causes)."""
    cause, hops = exc.__cause__, 0
    while cause is not None and hops < 100:
        if isinstance(cause, RemoteTraceback):
            return True
        cause, hops = cause.__cause__, hops + 1
    return False
