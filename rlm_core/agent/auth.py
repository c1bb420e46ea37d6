"""The agent's check of the session token on every call."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

from rlm_core.agent import AUTH_METADATA_KEY


def _deny_unary(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing session token")


def _deny_stream(request_iterator: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing session token")


class TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Rejects every call whose token does not match, before any handler runs."""

    def __init__(self, token: str, on_reject: Callable[[str], None] | None = None) -> None:
        self._expected = token.encode()
        self._on_reject = on_reject

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        supplied = ""
        for key, value in details.invocation_metadata or ():
            if key == AUTH_METADATA_KEY:
                supplied = value if isinstance(value, str) else value.decode("latin-1")
        if hmac.compare_digest(supplied.encode(), self._expected):
            return continuation(details)
        if self._on_reject is not None:
            self._on_reject(details.method)
        handler = continuation(details)
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_stream)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny_stream)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny_unary)
        return grpc.unary_unary_rpc_method_handler(_deny_unary)
