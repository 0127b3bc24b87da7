"""Failures of remote calls turned into the exceptions a user can act on (the one place that maps them).

A failure reaches the caller as a gRPC status (the RPC or the stream
failed) or as a Failure frame of a Session (the exchange failed, the stream
lives on); both carry a gRPC status code and details.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
from typing import Optional

import grpc

from ..errors import BundleError, ClusterError, EnvironmentMismatch, TurboliftError, WorkerLost
from ..v1 import worker_pb2 as pb

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def is_lost(exc: grpc.RpcError) -> bool:
    """True when the worker went away (the call may be retried elsewhere)."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE


def _exception(code: grpc.StatusCode, details: str, address: str, what: str,
               differences: Optional[list]) -> BaseException:
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f"{what} did not finish before its deadline")
    if code == grpc.StatusCode.UNAVAILABLE:
        return WorkerLost(f"worker {address} was lost during {what} and no retry was left: {details}",
                          worker=address)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ClusterError(f"worker {address} refused {what}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if differences is not None:
            return EnvironmentMismatch(details, [tuple(d) for d in differences])
        return BundleError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return BundleError(details)
    if code == grpc.StatusCode.CANCELLED:
        return cf.CancelledError(f"{what} was cancelled")
    return TurboliftError(f"worker {address} failed {what} ({code.name}): {details}")


def translate(exc: grpc.RpcError, address: str, what: str) -> BaseException:
    """The exception for a failed RPC of ``what`` on the worker at ``address``."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return _exception(code, details or "", address, what, None)


def from_failure(failure: pb.Failure, address: str, what: str) -> BaseException:
    """The exception for a Failure frame of an exchange."""
    code = _CODES.get(failure.code, grpc.StatusCode.UNKNOWN)
    differences = json.loads(failure.differences) if failure.differences else None
    return _exception(code, failure.details, address, what, differences)
