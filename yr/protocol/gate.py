"""Refuses a call without a valid session token from its metadata, before its body is read.

A handler only receives a request after gRPC has buffered all of it, and instance servers
accept messages of any size (large arguments): checked in the handler, the token would come
too late, and one unauthenticated 400 MB request would cost the server 400 MB and more.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from yr.protocol import TOKEN_METADATA_KEY

TokenCheck = Callable[[bytes], bool | Awaitable[bool]]


def presented_token(metadata: Any) -> bytes:
    for key, value in metadata or ():
        if key == TOKEN_METADATA_KEY:
            return value.encode() if isinstance(value, str) else value
    return b""


def one_token(expected: str) -> TokenCheck:
    """A check against one session's token, in constant time."""
    expected_bytes = expected.encode()
    return lambda token: bool(token) and hmac.compare_digest(token, expected_bytes)


def refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler that answers ``code`` without receiving the request: it is request-streaming
    and never iterates, so the refused body is never buffered."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return grpc.stream_unary_rpc_method_handler(refuse)


class TokenGate(grpc.aio.ServerInterceptor):
    """Lets through calls whose token ``accepts``; ``open_methods`` serve anyone, but with
    handlers that ignore the request body (e.g. a readiness probe's health check)."""

    def __init__(
        self,
        accepts: TokenCheck,
        *,
        refusal_message: str,
        open_methods: dict[str, grpc.RpcMethodHandler] | None = None,
    ) -> None:
        self._accepts = accepts
        self._refusal = refusal(grpc.StatusCode.UNAUTHENTICATED, refusal_message)
        self._open_methods = open_methods or {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        token = presented_token(handler_call_details.invocation_metadata)
        if token:
            accepted = self._accepts(token)
            if inspect.isawaitable(accepted):
                accepted = await accepted
            if accepted:
                return await continuation(handler_call_details)
        return self._open_methods.get(handler_call_details.method, self._refusal)
