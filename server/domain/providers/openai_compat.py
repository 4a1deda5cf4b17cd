"""The HTTP client for OpenAI-compatible providers: OpenAI itself, DeepSeek, Gemini's and OpenRouter's
OpenAI-compatible endpoints, and self-hosted servers (vLLM, Ollama, llama.cpp). The wire format is
`server.domain.wire.openai_upstream`'s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from server.domain.catalog import ModelSpec, Provider
from server.domain.conversation import Answer, AnswerEvent, Conversation
from server.domain.providers.base import UpstreamError
from server.domain.providers.http import pooled_client, post_json, sse_events
from server.domain.wire import openai_upstream
from server.domain.wire.openai_upstream import usage_of

__all__ = ["OpenAICompatibleClient", "usage_of"]


class OpenAICompatibleClient:
    """POST /chat/completions, streamed or not."""

    def __init__(self, provider: Provider, timeout_seconds: float) -> None:
        headers = {"authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
        self._client = pooled_client(provider.base_url, timeout_seconds, headers)

    def body(
        self, spec: ModelSpec, request: Conversation, max_output: int, *, stream: bool
    ) -> dict[str, Any]:
        return openai_upstream.request_body(spec, request, max_output, stream=stream)

    async def complete(self, spec: ModelSpec, request: Conversation, max_output: int) -> Answer:
        body = await post_json(
            self._client, "/chat/completions", self.body(spec, request, max_output, stream=False)
        )
        answer = openai_upstream.answer_of(body)
        if answer is None:
            raise UpstreamError("protocol", "the provider's answer has no choices")
        return answer

    async def stream(
        self, spec: ModelSpec, request: Conversation, max_output: int
    ) -> AsyncIterator[AnswerEvent]:
        body = self.body(spec, request, max_output, stream=True)
        # Closing this stream closes the provider's connection at once, not when it is collected.
        async with aclosing(sse_events(self._client, "/chat/completions", body)) as events:
            async for _event, data in events:
                if data == "[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except ValueError:
                    raise UpstreamError("protocol", "the provider sent a malformed stream event") from None
                if not isinstance(chunk, dict):
                    raise UpstreamError("protocol", "the provider sent a malformed stream event")
                if "error" in chunk:
                    raise UpstreamError("server", "the provider failed mid-stream")
                for event in openai_upstream.events_of(chunk):
                    yield event
        raise UpstreamError("protocol", "the provider's stream ended without [DONE]")

    async def aclose(self) -> None:
        await self._client.aclose()
