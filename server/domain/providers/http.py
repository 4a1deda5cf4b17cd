"""Shared HTTP plumbing for providers: one pooled httpx client each, SSE lines, error bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import orjson

from server.domain.providers.base import UpstreamError, error_for_status
from server.domain.providers.transport import AiohttpTransport

JSON_HEADERS = {"content-type": "application/json"}


def pooled_client(base_url: str, timeout_seconds: float, headers: dict[str, str]) -> httpx.AsyncClient:
    """A client with a connection pool and timeouts (the read timeout also bounds a stream's silence)."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout_seconds, connect=10.0, pool=10.0),
        transport=AiohttpTransport(max_connections=200, keepalive_seconds=30.0),
    )


def provider_message(body: bytes) -> str:
    """The human message of a provider's error body (OpenAI's and Anthropic's shapes), if any."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:2000]
    return ""


def transport_error(error: httpx.HTTPError) -> UpstreamError:
    """An httpx failure as an UpstreamError, without the URL or headers."""
    if isinstance(error, httpx.TimeoutException):
        return UpstreamError("timeout", "the provider did not answer in time")
    if isinstance(error, httpx.ConnectError):
        return UpstreamError("connect", "the provider could not be reached")
    return UpstreamError("protocol", "the provider's connection failed")


async def post_json(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a JSON body; the JSON answer, or an UpstreamError."""
    try:
        response = await client.post(path, content=orjson.dumps(body), headers=JSON_HEADERS)
    except httpx.HTTPError as error:
        raise transport_error(error) from None
    if response.status_code >= 400:
        raise error_for_status(response.status_code, provider_message(response.content))
    try:
        parsed = orjson.loads(response.content)
    except ValueError:
        raise UpstreamError("protocol", "the provider answered with something other than JSON") from None
    if not isinstance(parsed, dict):
        raise UpstreamError("protocol", "the provider's answer is not a JSON object")
    return parsed


async def sse_events(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> AsyncGenerator[tuple[str, str], None]:
    """POST and read Server-Sent Events as (event, data) pairs. Errors before the first event are
    UpstreamErrors with the provider's status."""
    try:
        async with client.stream("POST", path, content=orjson.dumps(body), headers=JSON_HEADERS) as response:
            if response.status_code >= 400:
                raise error_for_status(response.status_code, provider_message(await response.aread()))
            event = ""
            async for line in _lines(response):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    yield event, line[5:].strip()
                    event = ""
    except httpx.HTTPError as error:
        raise transport_error(error) from None


async def _lines(response: httpx.Response) -> AsyncIterator[str]:
    """The body's lines as they arrive (LF or CRLF endings), cheaper than httpx's general decoder."""
    pending = b""
    async for piece in response.aiter_bytes():
        pending += piece
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")
