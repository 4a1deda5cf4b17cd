"""The HTTP client for Anthropic's Messages API. The wire format is
`server.domain.wire.anthropic_upstream`'s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from server.domain.catalog import ModelSpec, Provider
from server.domain.conversation import Answer, AnswerEvent, Conversation
from server.domain.providers.base import UpstreamError
from server.domain.providers.http import pooled_client, post_json, sse_events
from server.domain.wire import anthropic_upstream
from server.domain.wire.anthropic_upstream import API_VERSION, messages_body

__all__ = ["API_VERSION", "AnthropicClient", "messages_body"]


class AnthropicClient:
    """POST /v1/messages, streamed or not."""

    def __init__(self, provider: Provider, timeout_seconds: float) -> None:
        headers = {"x-api-key": provider.api_key, "anthropic-version": API_VERSION}
        self._client = pooled_client(provider.base_url, timeout_seconds, headers)

    async def complete(self, spec: ModelSpec, request: Conversation, max_output: int) -> Answer:
        answer = await post_json(self._client, "/v1/messages", messages_body(spec, request, max_output))
        if answer.get("type") != "message":
            raise UpstreamError("protocol", "the provider's answer is not a message")
        return anthropic_upstream.answer_of(answer)

    async def stream(
        self, spec: ModelSpec, request: Conversation, max_output: int
    ) -> AsyncIterator[AnswerEvent]:
        body = {**messages_body(spec, request, max_output), "stream": True}
        reader = anthropic_upstream.StreamReader()
        # Closing this stream closes the provider's connection at once, not when it is collected.
        async with aclosing(sse_events(self._client, "/v1/messages", body)) as events:
            async for event, data in events:
                try:
                    payload = json.loads(data)
                except ValueError:
                    raise UpstreamError("protocol", "the provider sent a malformed stream event") from None
                if not isinstance(payload, dict):
                    raise UpstreamError("protocol", "the provider sent a malformed stream event")
                kind = payload.get("type", event)
                if kind == "error":
                    error = payload.get("error") or {}
                    kind_name = "overloaded" if error.get("type") == "overloaded_error" else "server"
                    raise UpstreamError(kind_name, "the provider failed mid-stream")
                for answer_event in reader.read(str(kind), payload):
                    yield answer_event
                if reader.done:
                    return
        raise UpstreamError("protocol", "the provider's stream ended before message_stop")

    async def aclose(self) -> None:
        await self._client.aclose()
