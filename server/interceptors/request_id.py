"""Request ids: Envoy's `x-request-id` (or a new one) in a ContextVar for the whole call."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.interceptors.wrapping import Behavior, ServerInterceptor, call_stream, call_unary, wrap_handler
from server.request_context import request_id_var

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def choose_request_id(metadata: Any) -> str:
    """The caller's request id when it is safe to log, else a new one."""
    for key, value in metadata or ():
        if key == "x-request-id":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if _SAFE_REQUEST_ID.match(text):
                return str(text)
    return uuid.uuid4().hex


class RequestIdInterceptor(ServerInterceptor):
    """Sets the request id for the duration of each call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        request_id = choose_request_id(handler_call_details.invocation_metadata)

        async def unary(behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = request_id_var.set(request_id)
            try:
                return await call_unary(behavior, request, context)
            finally:
                request_id_var.reset(token)

        async def stream(
            behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            token = request_id_var.set(request_id)
            try:
                async for item in call_stream(behavior, request, context):
                    yield item
            finally:
                request_id_var.reset(token)

        return wrap_handler(await continuation(handler_call_details), unary, stream)  # type: ignore[return-value]
