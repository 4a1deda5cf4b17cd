"""Access logs: one JSON line per call with method, status, latency and request id — never a secret
(no metadata, no request body)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.interceptors.wrapping import Behavior, ServerInterceptor, call_stream, call_unary, wrap_handler
from server.request_context import current_request_id

logger = logging.getLogger("crosscompute.access")


def _final_code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class AccessLogInterceptor(ServerInterceptor):
    """Logs every call once, when it ends."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method

        def log(
            context: grpc.aio.ServicerContext[Any, Any], started: float, error: BaseException | None
        ) -> None:
            code = _final_code(context, error)
            logger.info(
                "call",
                extra={
                    "method": method,
                    "status": code.name,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "request_id": current_request_id(),
                },
            )

        async def unary(behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started, error = time.perf_counter(), None
            try:
                return await call_unary(behavior, request, context)
            except BaseException as caught:
                error = caught
                raise
            finally:
                log(context, started, error)

        async def stream(
            behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started, error = time.perf_counter(), None
            try:
                async for item in call_stream(behavior, request, context):
                    yield item
            except BaseException as caught:
                error = caught
                raise
            finally:
                log(context, started, error)

        return wrap_handler(await continuation(handler_call_details), unary, stream)  # type: ignore[return-value]
