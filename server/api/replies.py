"""Sending a conversation's answer over a server stream of `HttpBody` messages: its headers, then one
JSON body or the stream's frames (Envoy writes each verbatim, with the first one's content type)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2

from server.domain.chat.service import ChatCall


async def answer_bodies(
    call: ChatCall, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """The answer's pieces; however this ends (headers that could not be sent, a caller that left,
    an error), the call closes: a stream that never started gives its hold back."""
    try:
        await context.send_initial_metadata(tuple(call.headers))
        if call.body is not None:
            yield httpbody_pb2.HttpBody(content_type="application/json", data=call.body)
            return
        assert call.chunks is not None
        content_type = "text/event-stream"
        async for chunk in call.chunks:
            # The first message's content type becomes the HTTP response's.
            yield httpbody_pb2.HttpBody(content_type=content_type, data=chunk)
            content_type = ""
    finally:
        await call.aclose()
