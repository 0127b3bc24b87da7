"""Token authentication on the worker, checked before any payload is read.

The check runs in a server interceptor, which sees the method name and the
metadata only: a request without the token is refused before its message
is even parsed, let alone unpickled. The standard health service stays open
so that probes (which carry no token) can reach it.
"""
from __future__ import annotations

import hmac
from concurrent import futures
from typing import Callable

import grpc

from .._wire.auth import HEADER, OPEN_METHOD_PREFIX, SESSION_METHOD


def _deny(request_or_iterator: object, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.UNAUTHENTICATED,
                  "missing or wrong turbolift token: give the caller the worker's token "
                  "(--token-file or TURBOLIFT_TOKEN_FILE)")


# Refusals run on threads of their own: a refused RPC that never sends its
# message holds one of these, never one that calls or health checks need.
_deny.experimental_thread_pool = futures.ThreadPoolExecutor(  # type: ignore[attr-defined]
    max_workers=4, thread_name_prefix="turbolift-refuse")


_DENY = {
    (False, False): grpc.unary_unary_rpc_method_handler(_deny),
    (True, False): grpc.stream_unary_rpc_method_handler(_deny),
    (False, True): grpc.unary_stream_rpc_method_handler(_deny),
    (True, True): grpc.stream_stream_rpc_method_handler(_deny),
}


class TokenInterceptor(grpc.ServerInterceptor):
    """Reject every RPC but health checks unless it carries the token."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails):
        if details.method.startswith(OPEN_METHOD_PREFIX) or details.method == SESSION_METHOD:
            return continuation(details)
        presented = b""
        for key, value in details.invocation_metadata or ():
            if key == HEADER:
                presented = value.encode() if isinstance(value, str) else value
                break
        if hmac.compare_digest(presented, self._expected):
            return continuation(details)
        # Answer with a handler of the same streaming shape, with no
        # deserialiser: the request bytes are never parsed. Unknown methods
        # are refused the same way, so names cannot be probed without it.
        handler = continuation(details)
        if handler is None:
            return _DENY[(False, False)]
        return _DENY[(handler.request_streaming, handler.response_streaming)]
