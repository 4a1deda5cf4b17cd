"""Anthropic's Messages API, translated to and from OpenAI's Chat Completions both ways: system
prompts, images, tools (`tool_use` / `tool_result`, several and in parallel), stop reasons, usage,
and streaming events turned into OpenAI chunks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from server.domain.catalog import ModelSpec, Provider
from server.domain.chat.request import ChatRequest
from server.domain.providers.base import Completion, UpstreamError, Usage
from server.domain.providers.http import pooled_client, post_json, sse_events

API_VERSION = "2023-06-01"
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if part["type"] == "text":
            blocks.append({"type": "text", "text": part["text"]})
        else:
            blocks.append(_image(part["image_url"]["url"]))
    return blocks


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"_raw": text}


def messages_body(spec: ModelSpec, request: ChatRequest, max_output: int) -> dict[str, Any]:
    """The Messages API request for an OpenAI-shaped request."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants alternating turns: consecutive same-role messages merge (parallel tool results).
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in request.messages:
        role = message["role"]
        if role in {"system", "developer"}:
            system.append(_text_of(message["content"]))
        elif role == "user":
            add("user", _blocks(message["content"]))
        elif role == "assistant":
            blocks = _blocks(message["content"])
            for call in message.get("tool_calls", ()):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": _arguments(call["function"]["arguments"]),
                    }
                )
            add("assistant", blocks)
        else:
            result = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": _text_of(message["content"]),
            }
            add("user", [result])

    body: dict[str, Any] = {"model": spec.upstream, "messages": turns, "max_tokens": max_output}
    if system:
        body["system"] = "\n\n".join(part for part in system if part)
    options = request.options
    if "temperature" in options:
        body["temperature"] = min(float(options["temperature"]), 1.0)
    if "top_p" in options:
        body["top_p"] = options["top_p"]
    if "stop" in options:
        body["stop_sequences"] = [options["stop"]] if isinstance(options["stop"], str) else options["stop"]
    if "user" in options:
        body["metadata"] = {"user_id": options["user"][:256]}
    if options.get("tools"):
        body["tools"] = [
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description", ""),
                "input_schema": tool["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for tool in options["tools"]
        ]
        choice = options.get("tool_choice", "auto")
        if choice == "required":
            tool_choice: dict[str, Any] = {"type": "any"}
        elif choice == "none":
            tool_choice = {"type": "none"}
        elif isinstance(choice, dict):
            tool_choice = {"type": "tool", "name": choice["function"]["name"]}
        else:
            tool_choice = {"type": "auto"}
        if options.get("parallel_tool_calls") is False and tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = tool_choice
    return body


def _usage(payload: dict[str, Any]) -> Usage:
    cached = int(payload.get("cache_read_input_tokens") or 0)
    written = int(payload.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(payload.get("input_tokens") or 0) + cached + written,
        output_tokens=int(payload.get("output_tokens") or 0),
        cached_tokens=cached,
    )


def _openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_from_message(message: dict[str, Any], model: str) -> Completion:
    """An OpenAI chat.completion for a Messages API answer."""
    text = ""
    calls = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            text += block.get("text", "")
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(block.get("input", {}))},
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        reply["tool_calls"] = calls
    usage = _usage(message.get("usage") or {})
    body = {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": STOP_REASONS.get(str(message.get("stop_reason")), "stop"),
                "logprobs": None,
            }
        ],
        "usage": _openai_usage(usage),
    }
    return Completion(body=body, usage=usage)


class AnthropicClient:
    """POST /v1/messages, streamed or not, answering in OpenAI's shapes."""

    def __init__(self, provider: Provider, timeout_seconds: float) -> None:
        headers = {"x-api-key": provider.api_key, "anthropic-version": API_VERSION}
        self._client = pooled_client(provider.base_url, timeout_seconds, headers)

    async def complete(self, spec: ModelSpec, request: ChatRequest, max_output: int) -> Completion:
        answer = await post_json(self._client, "/v1/messages", messages_body(spec, request, max_output))
        if answer.get("type") != "message":
            raise UpstreamError("protocol", "the provider's answer is not a message")
        return completion_from_message(answer, spec.upstream)

    async def stream(
        self, spec: ModelSpec, request: ChatRequest, max_output: int
    ) -> AsyncIterator[dict[str, Any]]:
        body = {**messages_body(spec, request, max_output), "stream": True}
        chunk_id, created = "chatcmpl-", int(time.time())
        input_usage: dict[str, Any] = {}
        output_tokens = 0
        finish: str | None = None
        tool_index: dict[int, int] = {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": spec.upstream,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }

        async for event, data in sse_events(self._client, "/v1/messages", body):
            try:
                payload = json.loads(data)
            except ValueError:
                raise UpstreamError("protocol", "the provider sent a malformed stream event") from None
            kind = payload.get("type", event)
            if kind == "message_start":
                message = payload.get("message", {})
                chunk_id = f"chatcmpl-{message.get('id', '')}"
                input_usage = message.get("usage") or {}
                yield chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_start":
                block = payload.get("content_block", {})
                if block.get("type") == "tool_use":
                    index = tool_index.setdefault(payload.get("index", 0), len(tool_index))
                    call = {"index": index, "id": block["id"], "type": "function"}
                    yield chunk(
                        {"tool_calls": [{**call, "function": {"name": block["name"], "arguments": ""}}]}
                    )
            elif kind == "content_block_delta":
                delta = payload.get("delta", {})
                if delta.get("type") == "text_delta":
                    yield chunk({"content": delta.get("text", "")})
                elif delta.get("type") == "input_json_delta":
                    index = tool_index.get(payload.get("index", 0), 0)
                    arguments = {"arguments": delta.get("partial_json", "")}
                    yield chunk({"tool_calls": [{"index": index, "function": arguments}]})
            elif kind == "message_delta":
                finish = STOP_REASONS.get(str(payload.get("delta", {}).get("stop_reason")), "stop")
                output_tokens = int((payload.get("usage") or {}).get("output_tokens") or output_tokens)
            elif kind == "message_stop":
                yield chunk({}, finish or "stop")
                usage = _usage({**input_usage, "output_tokens": output_tokens})
                yield {**chunk({}), "choices": [], "usage": _openai_usage(usage)}
                return
            elif kind == "error":
                error = payload.get("error", {})
                kind_name = "overloaded" if error.get("type") == "overloaded_error" else "server"
                raise UpstreamError(kind_name, "the provider failed mid-stream")
        raise UpstreamError("protocol", "the provider's stream ended before message_stop")

    async def aclose(self) -> None:
        await self._client.aclose()
