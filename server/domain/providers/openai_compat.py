"""OpenAI's Chat Completions wire format: OpenAI itself, DeepSeek, Gemini's and OpenRouter's
OpenAI-compatible endpoints, and self-hosted servers (vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from server.domain.catalog import ModelSpec, Provider
from server.domain.chat.request import ChatRequest
from server.domain.providers.base import Completion, UpstreamError, Usage
from server.domain.providers.http import pooled_client, post_json, sse_events


def usage_of(payload: Any) -> Usage | None:
    """OpenAI's `usage` object as Usage."""
    if not isinstance(payload, dict):
        return None
    details = payload.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(payload.get("prompt_tokens") or 0),
        output_tokens=int(payload.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


class OpenAICompatibleClient:
    """POST /chat/completions, streamed or not."""

    def __init__(self, provider: Provider, timeout_seconds: float) -> None:
        headers = {"authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
        self._client = pooled_client(provider.base_url, timeout_seconds, headers)

    def body(self, spec: ModelSpec, request: ChatRequest, max_output: int, *, stream: bool) -> dict[str, Any]:
        messages = []
        for message in request.messages:
            if message["role"] == "developer" and spec.system_role == "system":
                message = {**message, "role": "system"}
            messages.append(message)
        body: dict[str, Any] = {"model": spec.upstream, "messages": messages, **request.options}
        body[spec.token_parameter] = max_output
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, spec: ModelSpec, request: ChatRequest, max_output: int) -> Completion:
        answer = await post_json(
            self._client, "/chat/completions", self.body(spec, request, max_output, stream=False)
        )
        if not isinstance(answer.get("choices"), list):
            raise UpstreamError("protocol", "the provider's answer has no choices")
        return Completion(body=answer, usage=usage_of(answer.get("usage")))

    async def stream(
        self, spec: ModelSpec, request: ChatRequest, max_output: int
    ) -> AsyncIterator[dict[str, Any]]:
        async for _event, data in sse_events(
            self._client, "/chat/completions", self.body(spec, request, max_output, stream=True)
        ):
            if data == "[DONE]":
                return
            try:
                chunk = orjson.loads(data)
            except ValueError:
                raise UpstreamError("protocol", "the provider sent a malformed stream event") from None
            if isinstance(chunk, dict) and "error" in chunk:
                raise UpstreamError("server", "the provider failed mid-stream")
            yield chunk
        raise UpstreamError("protocol", "the provider's stream ended without [DONE]")

    async def aclose(self) -> None:
        await self._client.aclose()
