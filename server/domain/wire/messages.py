"""Inbound: Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`).

Requests become a `Conversation`: `system` as a string or text blocks; text, image, `tool_use` and
`tool_result` blocks (a user turn's tool results become tool turns, in order); custom tools and
`tool_choice`; `max_tokens` (required, as Anthropic requires it), `stop_sequences`, `temperature`,
`top_p`, `metadata.user_id`. Thinking blocks of earlier turns are not sent on (this gateway does not
ask for extended thinking); `top_k`, `thinking` and `service_tier` are accepted and not used.
Answers are rendered as a `message` or as its streamed events (`message_start`, `ping`,
`content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`); errors as
`{"type": "error", "error": {"type", "message"}}` with Anthropic's statuses.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from server.domain.conversation import (
    Answer,
    AnswerEvent,
    Billed,
    CallInfo,
    Conversation,
    Failure,
    Finish,
    Image,
    Message,
    NamedTool,
    Part,
    Started,
    StreamWriter,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from server.domain.credits import micro_to_wire
from server.domain.errors import DomainError, ErrorKind, InvalidArgument
from server.domain.wire import sse
from server.domain.wire.anthropic_upstream import arguments_json
from server.domain.wire.chat_completions import integer, number, one_of, schema
from server.domain.wire.json_body import parse_body

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_STOP_SEQUENCES = 4
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
#: Reasons of an unavailable provider: Anthropic calls that overloaded (529), and its SDK backs off.
OVERLOADED_REASONS = frozenset(
    {"ALL_PROVIDERS_FAILED", "PROVIDER_OVERLOADED", "PROVIDER_RATE_LIMITED", "NO_MODEL_AVAILABLE"}
)
#: Anthropic's error type and HTTP status for each kind of failure.
ERRORS: dict[ErrorKind, tuple[str, int]] = {
    ErrorKind.INVALID_ARGUMENT: ("invalid_request_error", 400),
    ErrorKind.UNAUTHENTICATED: ("authentication_error", 401),
    ErrorKind.PAYMENT_REQUIRED: ("billing_error", 402),
    ErrorKind.PERMISSION_DENIED: ("permission_error", 403),
    ErrorKind.NOT_FOUND: ("not_found_error", 404),
    ErrorKind.CONFLICT: ("invalid_request_error", 409),
    ErrorKind.RATE_LIMITED: ("rate_limit_error", 429),
    ErrorKind.NOT_IMPLEMENTED: ("api_error", 501),
    ErrorKind.UPSTREAM_FAILED: ("api_error", 502),
    ErrorKind.UNAVAILABLE: ("api_error", 503),
    ErrorKind.UPSTREAM_TIMEOUT: ("timeout_error", 504),
    ErrorKind.INTERNAL: ("api_error", 500),
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


# --- Errors ------------------------------------------------------------------------------------


def error_object(error_type: str, message: str) -> dict[str, Any]:
    """Anthropic's error body."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_status(error: DomainError) -> tuple[str, int]:
    """Anthropic's error type and HTTP status for `error`: an exhausted provider is 529 overloaded."""
    if error.kind is ErrorKind.UNAVAILABLE and error.reason in OVERLOADED_REASONS:
        return "overloaded_error", 529
    return ERRORS[error.kind]


def error_body(error: DomainError) -> dict[str, Any]:
    error_type, _status = error_status(error)
    return error_object(error_type, error.message)


# --- Requests ----------------------------------------------------------------------------------


def _fail(message: str, param: str | None) -> InvalidArgument:
    return InvalidArgument(message, param=param, reason="INVALID_REQUEST")


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"`{param}` must be a string.", param)
    return value


def _image(block: dict[str, Any], where: str) -> Image:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _fail(f"`{where}.source` must be an object.", f"{where}.source")
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not one_of(media_type, IMAGE_TYPES) or not isinstance(data, str):
            raise _fail(
                f"`{where}.source` needs a `media_type` ({', '.join(sorted(IMAGE_TYPES))}) "
                "and base64 `data`.",
                f"{where}.source",
            )
        return Image(f"data:{media_type};base64,{data}")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
        if url.startswith(("http://", "https://")):
            return Image(url)
    raise _fail(f"`{where}.source` must be a base64 or an http(s) URL image source.", f"{where}.source")


def _tool_result_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _fail(f"`{where}` must be a string or an array of text blocks.", where)
    texts = []
    for index, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _fail(
                f"`{where}[{index}]` must be a text block: this gateway sends tool results as text.",
                f"{where}[{index}]",
            )
        texts.append(_text(block.get("text"), f"{where}[{index}].text"))
    return "\n".join(texts)


def _user_turns(content: Any, where: str) -> list[Message]:
    """A user message: its tool results as tool turns, the rest as user turns, in order."""
    if isinstance(content, str):
        return [Message(role="user", content=content)]
    turns: list[Message] = []
    parts: list[Part] = []
    for index, block in enumerate(content):
        at = f"{where}[{index}]"
        if not isinstance(block, dict):
            raise _fail(f"`{at}` must be an object.", at)
        kind = block.get("type")
        if kind == "text":
            parts.append(Text(_text(block.get("text"), f"{at}.text")))
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            if parts:
                turns.append(Message(role="user", content=tuple(parts)))
                parts = []
            is_error = block.get("is_error", False)
            if not isinstance(is_error, bool):
                raise _fail(f"`{at}.is_error` must be true or false.", f"{at}.is_error")
            turns.append(
                Message(
                    role="tool",
                    content=_tool_result_text(block.get("content"), f"{at}.content"),
                    tool_call_id=_text(block.get("tool_use_id"), f"{at}.tool_use_id"),
                    is_error=is_error,
                )
            )
        else:
            raise _fail(
                f"`{at}.type` {str(kind)[:40]!r} is not a block user messages accept here.", f"{at}.type"
            )
    if parts:
        turns.append(Message(role="user", content=tuple(parts)))
    return turns


def _assistant_turn(content: Any, where: str) -> Message:
    if isinstance(content, str):
        return Message(role="assistant", content=content)
    texts: list[str] = []
    calls: list[ToolCall] = []
    for index, block in enumerate(content):
        at = f"{where}[{index}]"
        if not isinstance(block, dict):
            raise _fail(f"`{at}` must be an object.", at)
        kind = block.get("type")
        if kind == "text":
            texts.append(_text(block.get("text"), f"{at}.text"))
        elif kind == "tool_use":
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise _fail(f"`{at}.input` must be an object.", f"{at}.input")
            calls.append(
                ToolCall(
                    id=_text(block.get("id"), f"{at}.id"),
                    name=_text(block.get("name"), f"{at}.name"),
                    arguments=orjson.dumps(arguments).decode(),
                )
            )
        elif kind in {"thinking", "redacted_thinking"}:
            continue  # not sent on: this gateway does not ask for extended thinking
        else:
            raise _fail(
                f"`{at}.type` {str(kind)[:40]!r} is not a block assistant messages accept here.", f"{at}.type"
            )
    text = "".join(texts)
    return Message(role="assistant", content=text if text or not calls else None, tool_calls=tuple(calls))


def _system(value: Any) -> list[Message]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Message(role="system", content=value)] if value else []
    if not isinstance(value, list):
        raise _fail("`system` must be a string or an array of text blocks.", "system")
    texts = []
    for index, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _fail(f"`system[{index}]` must be a text block.", f"system[{index}]")
        texts.append(_text(block.get("text"), f"system[{index}].text"))
    return [Message(role="system", content="\n\n".join(texts))] if texts else []


def _tools(body: dict[str, Any]) -> tuple[tuple[Tool, ...], ToolChoice | None, bool | None]:
    tools = body.get("tools")
    parsed: list[Tool] = []
    if tools is not None:
        if not isinstance(tools, list) or len(tools) > 128:
            raise _fail("`tools` must be an array of at most 128 tools.", "tools")
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            if not isinstance(tool, dict):
                raise _fail(f"`{where}` must be an object.", where)
            if tool.get("type") not in {None, "custom"}:
                raise _fail(
                    f"`{where}.type` {str(tool.get('type'))[:40]!r}: "
                    "only custom (client) tools are supported.",
                    f"{where}.type",
                )
            name = tool.get("name")
            if not isinstance(name, str) or not TOOL_NAME.match(name):
                raise _fail(f"`{where}.name` must match ^[A-Za-z0-9_-]{{1,128}}$.", f"{where}.name")
            description = tool.get("description")
            if description is not None and not isinstance(description, str):
                raise _fail(f"`{where}.description` must be a string.", f"{where}.description")
            input_schema = schema(tool.get("input_schema"), f"{where}.input_schema")
            if input_schema is None:
                raise _fail(f"`{where}.input_schema` is required.", f"{where}.input_schema")
            parsed.append(Tool(name=name, description=description, parameters=input_schema))
    choice = body.get("tool_choice")
    if choice is None:
        return tuple(parsed), None, None
    if not isinstance(choice, dict) or not one_of(choice.get("type"), {"auto", "any", "tool", "none"}):
        raise _fail("`tool_choice.type` must be auto, any, tool or none.", "tool_choice")
    disable_parallel = choice.get("disable_parallel_tool_use")
    if disable_parallel is not None and not isinstance(disable_parallel, bool):
        raise _fail("`tool_choice.disable_parallel_tool_use` must be true or false.", "tool_choice")
    kind = choice["type"]
    tool_choice: ToolChoice
    if kind == "tool":
        tool_choice = NamedTool(_text(choice.get("name"), "tool_choice.name"))
    else:
        tool_choice = {"auto": "auto", "any": "required", "none": "none"}[kind]  # type: ignore[assignment]
    return tuple(parsed), tool_choice, (False if disable_parallel else None)


def validate(body: dict[str, Any], *, counting: bool = False) -> Conversation:
    """A `Conversation` from a Messages API body (`counting`: a count_tokens body, no `max_tokens`)."""
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 200:
        raise _fail(
            "`model` must be a model id or a routing profile (auto, cheap, medium, premium).", "model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("`messages` must be a non-empty array.", "messages")
    max_tokens = integer(body, "max_tokens", 1, 10_000_000)
    if max_tokens is None and not counting:
        raise _fail("`max_tokens` is required.", "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("`stream` must be true or false.", "stream")
    stop = body.get("stop_sequences")
    if stop is not None and not (
        isinstance(stop, list) and len(stop) <= MAX_STOP_SEQUENCES and all(isinstance(s, str) for s in stop)
    ):
        raise _fail("`stop_sequences` must be an array of up to 4 strings.", "stop_sequences")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _fail("`metadata` must be an object.", "metadata")
    user = (metadata or {}).get("user_id")
    if user is not None and not isinstance(user, str):
        raise _fail("`metadata.user_id` must be a string.", "metadata.user_id")
    integer(body, "top_k", 0, 1_000_000)
    turns = _system(body.get("system"))
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or not one_of(message.get("role"), {"user", "assistant"}):
            raise _fail(f"`{where}.role` must be user or assistant.", f"{where}.role")
        content = message.get("content")
        if not isinstance(content, str) and not (isinstance(content, list) and content):
            raise _fail(
                f"`{where}.content` must be a string or a non-empty array of blocks.", f"{where}.content"
            )
        if message["role"] == "user":
            turns += _user_turns(content, f"{where}.content")
        else:
            turns.append(_assistant_turn(content, f"{where}.content"))
    tools, tool_choice, parallel = _tools(body)
    return Conversation(
        model=model,
        turns=turns,
        stream=stream,
        max_output_tokens=max_tokens,
        temperature=number(body, "temperature", 0, 1),
        top_p=number(body, "top_p", 0, 1),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        user=user,
        stop=tuple(stop) if stop is not None else None,
    )


def parse(raw: bytes, *, counting: bool = False) -> Conversation:
    return validate(parse_body(raw), counting=counting)


# --- Answers -----------------------------------------------------------------------------------


def message_id(call: CallInfo) -> str:
    return "msg_" + call.call_id.replace("-", "")


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic's usage: its `input_tokens` excludes what was read from the cache."""
    return {
        "input_tokens": usage.input_tokens - usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(finish: Finish) -> str:
    if finish.reason == "stop" and finish.stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS[finish.reason]


def crosscompute_json(call: CallInfo, billed: Billed) -> dict[str, Any]:
    return {"billed_credits": micro_to_wire(billed.billed_micro), "price_rule": call.price_rule}


class Messages:
    """Answers as Anthropic `message` objects and their streams."""

    def body(self, call: CallInfo, answer: Answer, billed: Billed) -> bytes:
        content: list[dict[str, Any]] = []
        if answer.text:
            content.append({"type": "text", "text": answer.text})
        content += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": arguments_json(c.arguments)}
            for c in answer.tool_calls
        ]
        return orjson.dumps(
            {
                "id": message_id(call),
                "type": "message",
                "role": "assistant",
                "model": call.model_id,
                "content": content,
                "stop_reason": stop_reason(answer.finish),
                "stop_sequence": answer.finish.stop_sequence,
                "usage": usage_json(billed.usage),
            }
        )

    def stream(self, call: CallInfo) -> StreamWriter:
        return EventWriter(call)


class EventWriter:
    """One answer as Messages stream events. Content blocks open as the answer's parts arrive and
    close when the next begins; `message_delta` waits for the bill, which carries the real usage."""

    def __init__(self, call: CallInfo) -> None:
        self._call = call
        self._started = False
        self._blocks = 0
        #: The open block: ("text", None) or ("tool", the call's index); None when none is open.
        self._open: tuple[str, int | None] | None = None
        self._tool_blocks: dict[int, int] = {}
        self._finish = Finish("stop")

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(self._call),
            "type": "message",
            "role": "assistant",
            "model": self._call.model_id,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._call.counted_prompt, "output_tokens": 0},
        }
        return sse.event("message_start", {"type": "message_start", "message": message}) + sse.event(
            "ping", {"type": "ping"}
        )

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index = self._blocks - 1
        return sse.event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open_block(self, kind: tuple[str, int | None], block: dict[str, Any]) -> bytes:
        frames = self._close_block()
        self._open = kind
        index = self._blocks
        self._blocks += 1
        payload = {"type": "content_block_start", "index": index, "content_block": block}
        return frames + sse.event("content_block_start", payload)

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse.event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def write(self, event: AnswerEvent) -> bytes:
        frames = self._start()
        if isinstance(event, TextDelta) and event.text:
            if self._open != ("text", None):
                frames += self._open_block(("text", None), {"type": "text", "text": ""})
            frames += self._delta(self._blocks - 1, {"type": "text_delta", "text": event.text})
        elif isinstance(event, ToolCallDelta):
            if event.index not in self._tool_blocks:
                block = {"type": "tool_use", "id": event.id or "", "name": event.name or "", "input": {}}
                frames += self._open_block(("tool", event.index), block)
                self._tool_blocks[event.index] = self._blocks - 1
            if event.arguments:
                index = self._tool_blocks[event.index]
                frames += self._delta(index, {"type": "input_json_delta", "partial_json": event.arguments})
        elif isinstance(event, Finish):
            self._finish = event
        elif isinstance(event, Failure):
            frames += self.fail(event, Billed(Usage(0, 0), 0))
        elif not isinstance(event, Started):
            pass  # reasoning is not relayed (Anthropic's thinking blocks need signatures); usage waits
        return frames

    def close(self, billed: Billed) -> bytes:
        frames = self._start() + self._close_block()
        usage = usage_json(billed.usage)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self._finish), "stop_sequence": self._finish.stop_sequence},
            "usage": usage,
            "crosscompute": crosscompute_json(self._call, billed),
        }
        return (
            frames + sse.event("message_delta", delta) + sse.event("message_stop", {"type": "message_stop"})
        )

    def fail(self, failure: Failure, billed: Billed) -> bytes:
        error_type = "overloaded_error" if failure.code == "provider_overloaded" else "api_error"
        return self._start() + sse.event("error", error_object(error_type, failure.message))
