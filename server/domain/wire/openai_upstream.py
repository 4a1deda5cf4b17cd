"""Outbound: OpenAI's Chat Completions wire format, as OpenAI itself, DeepSeek, Gemini's and
OpenRouter's OpenAI-compatible endpoints and self-hosted servers (vLLM, Ollama, llama.cpp) speak it.

A `Conversation` becomes a request body; a `chat.completion` becomes an `Answer` and each
`chat.completion.chunk` the events it carries."""

from __future__ import annotations

from typing import Any

from server.domain.catalog import ModelSpec
from server.domain.conversation import (
    Answer,
    AnswerEvent,
    Conversation,
    Finish,
    FinishReason,
    ReasoningDelta,
    Started,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def request_body(spec: ModelSpec, request: Conversation, max_output: int, *, stream: bool) -> dict[str, Any]:
    """The Chat Completions request for `request`, under the token parameter and system role the
    model takes."""
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


def _finish(value: Any) -> Finish:
    return Finish(FINISH_REASONS.get(str(value), "stop"))


def answer_of(body: dict[str, Any]) -> Answer | None:
    """A `chat.completion` as an `Answer`; None when it has no choice to read."""
    choices = body.get("choices")
    if not isinstance(choices, list):
        return None
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        calls.append(
            ToolCall(
                id=str(call.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=str(function.get("arguments") or ""),
            )
        )
    content = message.get("content")
    reasoning = message.get("reasoning_content")
    return Answer(
        text=content if isinstance(content, str) else "",
        tool_calls=tuple(calls),
        finish=_finish(choice.get("finish_reason")),
        usage=usage_of(body.get("usage")),
        reasoning=reasoning if isinstance(reasoning, str) else "",
    )


def events_of(chunk: dict[str, Any]) -> list[AnswerEvent]:
    """The events one `chat.completion.chunk` carries, in order."""
    events: list[AnswerEvent] = []
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        if delta.get("role") == "assistant" and not delta.get("content"):
            events.append(Started())
        if isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
            events.append(ReasoningDelta(delta["reasoning_content"]))
        if isinstance(delta.get("content"), str) and delta["content"]:
            events.append(TextDelta(delta["content"]))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            name = function.get("name")
            events.append(
                ToolCallDelta(
                    index=int(call.get("index") or 0),
                    arguments=str(function.get("arguments") or ""),
                    id=call.get("id") if isinstance(call.get("id"), str) else None,
                    name=name if isinstance(name, str) else None,
                )
            )
        if choice.get("finish_reason"):
            events.append(_finish(choice["finish_reason"]))
    usage = usage_of(chunk.get("usage")) if chunk.get("usage") else None
    if usage is not None:
        events.append(UsageReport(usage))
    return events
