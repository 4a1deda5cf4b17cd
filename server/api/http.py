"""How a servicer asks Envoy for an HTTP status that gRPC cannot express (201, 503 with a body)."""

from __future__ import annotations

from typing import Any

import grpc

from server.interceptors.errors import HTTP_STATUS_HEADER


async def send_http_status(context: grpc.aio.ServicerContext[Any, Any], status: int) -> None:
    """Send initial metadata telling Envoy which HTTP status a successful answer takes."""
    await context.send_initial_metadata(((HTTP_STATUS_HEADER, str(status)),))
