"""gRPC statuses turned into the exceptions a user can act on (the one place that maps them)."""
from __future__ import annotations

import concurrent.futures as cf
import json

import grpc

from .._wire.protocol import DIFFERENCES_KEY
from ..errors import BundleError, ClusterError, EnvironmentMismatch, TurboliftError, WorkerLost


def is_lost(exc: grpc.RpcError) -> bool:
    """True when the worker went away (the call may be retried elsewhere)."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE


def translate(exc: grpc.RpcError, address: str, what: str) -> BaseException:
    """The exception for a failed RPC of ``what`` on the worker at ``address``."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f"{what} did not finish before its deadline")
    if code == grpc.StatusCode.UNAVAILABLE:
        return WorkerLost(f"worker {address} was lost during {what} and no retry was left: {details}",
                          worker=address)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ClusterError(f"worker {address} refused {what}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        for key, value in exc.trailing_metadata() or ():
            if key == DIFFERENCES_KEY:
                return EnvironmentMismatch(details, [tuple(d) for d in json.loads(value)])
        return BundleError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return BundleError(details)
    if code == grpc.StatusCode.CANCELLED:
        return cf.CancelledError(f"{what} was cancelled")
    return TurboliftError(f"worker {address} failed {what} ({code.name}): {details}")

