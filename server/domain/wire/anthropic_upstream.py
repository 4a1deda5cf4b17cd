"""Outbound: Anthropic's Messages API. A `Conversation` becomes a Messages request (system prompts,
images, tools, `tool_use` / `tool_result` with parallel calls merged into one turn, `tool_choice`,
stop sequences); a message becomes an `Answer`, and a stream's events become answer events."""

from __future__ import annotations

import json
from typing import Any

from server.domain.catalog import ModelSpec
from server.domain.conversation import (
    Answer,
    AnswerEvent,
    Conversation,
    Finish,
    FinishReason,
    Image,
    Message,
    NamedTool,
    Started,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)

API_VERSION = "2023-06-01"
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def finish_of(stop_reason: Any, stop_sequence: Any = None) -> Finish:
    return Finish(
        STOP_REASONS.get(str(stop_reason), "stop"),
        stop_sequence if isinstance(stop_sequence, str) else None,
    )


def image_block(image: Image) -> dict[str, Any]:
    if image.url.startswith("data:"):
        header, _, data = image.url.partition(",")
        media_type = header[5:].split(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": image.url}}


def _joined(turn: Message) -> str:
    if isinstance(turn.content, str):
        return turn.content
    return "".join(part.text for part in turn.content or () if isinstance(part, Text))


def _blocks(turn: Message) -> list[dict[str, Any]]:
    if isinstance(turn.content, str):
        return [{"type": "text", "text": turn.content}] if turn.content else []
    blocks: list[dict[str, Any]] = []
    for part in turn.content or ():
        blocks.append({"type": "text", "text": part.text} if isinstance(part, Text) else image_block(part))
    return blocks


def arguments_json(text: str) -> Any:
    """A tool call's JSON arguments as Anthropic's `input` (kept, wrapped, when not JSON)."""
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"_raw": text}


def messages_body(spec: ModelSpec, request: Conversation, max_output: int) -> dict[str, Any]:
    """The Messages API request for `request`."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants alternating turns: consecutive same-role messages merge (parallel tool results).
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for turn in request.turns:
        if turn.role in {"system", "developer"}:
            system.append(_joined(turn))
        elif turn.role == "user":
            add("user", _blocks(turn))
        elif turn.role == "assistant":
            blocks = _blocks(turn)
            for call in turn.tool_calls:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": arguments_json(call.arguments),
                    }
                )
            add("assistant", blocks)
        else:
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": turn.tool_call_id or "",
                "content": _joined(turn),
            }
            if turn.is_error:
                result["is_error"] = True
            add("user", [result])

    body: dict[str, Any] = {"model": spec.upstream, "messages": turns, "max_tokens": max_output}
    if system:
        body["system"] = "\n\n".join(part for part in system if part)
    if request.temperature is not None:
        body["temperature"] = min(float(request.temperature), 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop is not None:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user[:256]}
    if request.tools:
        body["tools"] = [
            {
                "name": tool.name,
                "description": tool.description or "",
                "input_schema": tool.parameters or {"type": "object", "properties": {}},
            }
            for tool in request.tools
        ]
        choice = request.tool_choice or "auto"
        if choice == "required":
            tool_choice: dict[str, Any] = {"type": "any"}
        elif choice == "none":
            tool_choice = {"type": "none"}
        elif isinstance(choice, NamedTool):
            tool_choice = {"type": "tool", "name": choice.name}
        else:
            tool_choice = {"type": "auto"}
        if request.parallel_tool_calls is False and tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = tool_choice
    return body


def usage_of(payload: dict[str, Any]) -> Usage:
    """Anthropic's usage: its input excludes cache reads and writes, ours includes them."""
    cached = int(payload.get("cache_read_input_tokens") or 0)
    written = int(payload.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(payload.get("input_tokens") or 0) + cached + written,
        output_tokens=int(payload.get("output_tokens") or 0),
        cached_tokens=cached,
    )


def answer_of(message: dict[str, Any]) -> Answer:
    """A Messages API answer as an `Answer`."""
    text = ""
    calls = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            text += block.get("text", "")
        elif block.get("type") == "tool_use":
            calls.append(ToolCall(block["id"], block["name"], json.dumps(block.get("input", {}))))
    return Answer(
        text=text,
        tool_calls=tuple(calls),
        finish=finish_of(message.get("stop_reason"), message.get("stop_sequence")),
        usage=usage_of(message.get("usage") or {}),
    )


class StreamReader:
    """Reads one Messages stream's events (`message_start`, `content_block_*`, `message_delta`,
    `message_stop`) as answer events. `done` is set at `message_stop`."""

    def __init__(self) -> None:
        self._input_usage: dict[str, Any] = {}
        self._output_tokens = 0
        self._finish: Finish | None = None
        self._tool_index: dict[int, int] = {}
        self.done = False

    def read(self, kind: str, payload: dict[str, Any]) -> list[AnswerEvent]:
        """The answer events of one stream event; an `error` event is returned as its error type."""
        if kind == "message_start":
            self._input_usage = (payload.get("message") or {}).get("usage") or {}
            return [Started()]
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(payload.get("index", 0), len(self._tool_index))
                return [ToolCallDelta(index, "", id=block["id"], name=block["name"])]
            if block.get("type") == "text" and block.get("text"):
                return [TextDelta(block["text"])]
            return []
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [TextDelta(delta.get("text", ""))]
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(payload.get("index", 0), 0)
                return [ToolCallDelta(index, delta.get("partial_json", ""))]
            return []
        if kind == "message_delta":
            delta = payload.get("delta") or {}
            self._finish = finish_of(delta.get("stop_reason"), delta.get("stop_sequence"))
            usage = payload.get("usage") or {}
            self._output_tokens = int(usage.get("output_tokens") or self._output_tokens)
            return []
        if kind == "message_stop":
            self.done = True
            usage = usage_of({**self._input_usage, "output_tokens": self._output_tokens})
            return [self._finish or Finish("stop"), UsageReport(usage)]
        return []
