"""Access logs: one JSON line per call with method, status, latency and request id — never a secret
(no metadata, no request body)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from server.interceptors.wrapping import AroundInterceptor, Context
from server.request_context import current_request_id

logger = logging.getLogger("crosscompute.access")


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class AccessLogInterceptor(AroundInterceptor):
    """Logs every call once, when it ends."""

    @asynccontextmanager
    async def around(self, details: grpc.HandlerCallDetails, context: Context) -> AsyncIterator[None]:
        started, error = time.perf_counter(), None
        try:
            yield
        except BaseException as caught:
            error = caught
            raise
        finally:
            logger.info(
                "call",
                extra={
                    "method": details.method,
                    "status": final_code(context, error).name,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "request_id": current_request_id(),
                },
            )
