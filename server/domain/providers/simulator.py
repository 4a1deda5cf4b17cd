"""The local simulator: NOT a real model. It answers every request with a short canned text about
the request, so a newcomer can try the gateway (keys, billing, streaming) with no provider at all."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from server.domain.catalog import ModelSpec
from server.domain.chat.request import ChatRequest
from server.domain.chat.tokens import count_prompt, count_text
from server.domain.providers.base import Completion, Usage

NOTICE = "[CrossCompute simulator: not a real model]"


def _answer(request: ChatRequest, max_output: int) -> str:
    last = next((m for m in reversed(request.messages) if m["role"] == "user"), None)
    content = last["content"] if last else ""
    said = (
        content
        if isinstance(content, str)
        else " ".join(p.get("text", "") for p in content if p["type"] == "text")
    )
    words = said.split()
    echo = " ".join(words[:24]) + (" …" if len(words) > 24 else "")
    text = f"{NOTICE} You wrote {len(words)} words: “{echo}”. Configure a provider key for real answers."
    tokens = text.split(" ")
    return " ".join(tokens[:max_output])


def _usage(request: ChatRequest, text: str) -> Usage:
    return Usage(input_tokens=count_prompt(request.messages, request.options), output_tokens=count_text(text))


class SimulatorClient:
    """Answers locally, streamed word by word or whole."""

    async def complete(self, spec: ModelSpec, request: ChatRequest, max_output: int) -> Completion:
        text = _answer(request, max_output)
        usage = _usage(request, text)
        body = {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": spec.upstream,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }
        return Completion(body=body, usage=usage)

    async def stream(
        self, spec: ModelSpec, request: ChatRequest, max_output: int
    ) -> AsyncIterator[dict[str, Any]]:
        text = _answer(request, max_output)
        usage = _usage(request, text)
        base = {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": spec.upstream,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                **base,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }

        yield chunk({"role": "assistant", "content": ""})
        for index, word in enumerate(text.split(" ")):
            await asyncio.sleep(0)  # let other requests run between words
            yield chunk({"content": word if index == 0 else f" {word}"})
        yield chunk({}, "stop")
        yield {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }

    async def aclose(self) -> None:
        return None
