"""Inbound: OpenAI's Chat Completions API (`POST /v1/chat/completions`).

Requests become a `Conversation`; bad input is an `InvalidArgument` naming the offending parameter
(`param`, as OpenAI does). Normalisation accepts what OpenAI clients send: the `developer` role, the
Responses-style content parts `input_text` and `input_image`, and `max_tokens` or
`max_completion_tokens`. Answers are rendered as a `chat.completion` or as `chat.completion.chunk`
events ending `data: [DONE]`; this module also writes OpenAI's usage object and error body, for
every OpenAI-shaped surface.
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
    OutputFormat,
    Part,
    ReasoningDelta,
    Role,
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
from server.domain.wire.json_body import parse_body

ROLES = {"system", "developer", "user", "assistant", "tool"}
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_STOP_SEQUENCES = 4

#: OpenAI's error `type` for each kind of failure.
ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_ARGUMENT: "invalid_request_error",
    ErrorKind.UNAUTHENTICATED: "authentication_error",
    ErrorKind.PAYMENT_REQUIRED: "insufficient_quota",
    ErrorKind.PERMISSION_DENIED: "permission_error",
    ErrorKind.NOT_FOUND: "invalid_request_error",
    ErrorKind.CONFLICT: "invalid_request_error",
    ErrorKind.RATE_LIMITED: "rate_limit_error",
    ErrorKind.NOT_IMPLEMENTED: "api_error",
    ErrorKind.UPSTREAM_FAILED: "api_error",
    ErrorKind.UNAVAILABLE: "api_error",
    ErrorKind.UPSTREAM_TIMEOUT: "api_error",
    ErrorKind.INTERNAL: "api_error",
}


# --- Errors and usage, for every OpenAI-shaped surface ----------------------------------------


def error_object(message: str, error_type: str, code: str | None, param: str | None) -> dict[str, Any]:
    """OpenAI's error body: `{"error": {"message", "type", "code", "param"}}`."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def error_body(error: DomainError) -> dict[str, Any]:
    """The body an OpenAI client gets for `error`."""
    return error_object(error.message, ERROR_TYPES[error.kind], error.reason.lower(), error.param)


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's `usage` object."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def crosscompute_json(billed: Billed, price_rule: str) -> dict[str, Any]:
    """What the gateway adds to a stream's usage: the credits billed and the price rule."""
    return {"billed_credits": micro_to_wire(billed.billed_micro), "price_rule": price_rule}


# --- Requests ----------------------------------------------------------------------------------


def _fail(message: str, param: str | None) -> InvalidArgument:
    return InvalidArgument(message, param=param, reason="INVALID_REQUEST")


def one_of(value: Any, options: set[str]) -> bool:
    """Whether `value` is one of the strings `options` (any JSON value may arrive here)."""
    return isinstance(value, str) and value in options


def number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"`{name}` must be a number from {low:g} to {high:g}.", name)
    return value


def integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"`{name}` must be a whole number from {low} to {high}.", name)
    return value


def string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"`{param}` must be a string.", param)
    return value


def image_part(part: dict[str, Any], param: str) -> Image:
    """An image part, `image_url` (an object or a string) or Responses' `input_image`."""
    source = part.get("image_url", part.get("url"))
    if isinstance(source, dict):
        url, detail = source.get("url"), source.get("detail")
    else:
        url, detail = source, part.get("detail")
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:image/")):
        raise _fail(f"`{param}` needs an image URL (http(s) or a data:image/ URL).", param)
    if detail is not None and not one_of(detail, {"auto", "low", "high"}):
        raise _fail(f"`{param}.detail` must be auto, low or high.", f"{param}.detail")
    return Image(url=url, detail=detail)


def _content(value: Any, role: str, param: str) -> str | tuple[Part, ...] | None:
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return None
    if not isinstance(value, list) or not value:
        raise _fail(f"`{param}` must be a string or a non-empty array of content parts.", param)
    parts: list[Part] = []
    for index, part in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise _fail(f"`{where}` must be an object.", where)
        kind = part.get("type")
        if one_of(kind, {"text", "input_text"}):
            parts.append(Text(string(part.get("text"), f"{where}.text")))
        elif one_of(kind, {"image_url", "input_image"}) and role == "user":
            parts.append(image_part(part, where))
        else:
            raise _fail(
                f"`{where}.type` {str(kind)[:40]!r} is not a content part {role} messages accept.",
                f"{where}.type",
            )
    return tuple(parts)


def _tool_calls(value: Any, param: str) -> tuple[ToolCall, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(f"`{param}` must be a non-empty array.", param)
    calls = []
    for index, call in enumerate(value):
        where = f"{param}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise _fail(f"`{where}` must have an `id` and a `function`.", where)
        calls.append(
            ToolCall(
                id=call["id"],
                name=string(function.get("name"), f"{where}.function.name"),
                arguments=string(function.get("arguments", "{}"), f"{where}.function.arguments"),
            )
        )
    return tuple(calls)


def _message(value: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(value, dict):
        raise _fail(f"`{where}` must be an object.", where)
    if not one_of(value.get("role"), ROLES):
        raise _fail(f"`{where}.role` must be one of {', '.join(sorted(ROLES))}.", f"{where}.role")
    role: Role = value["role"]
    content = _content(value.get("content"), role, f"{where}.content")
    tool_calls: tuple[ToolCall, ...] = ()
    if role == "assistant" and value.get("tool_calls") is not None:
        tool_calls = _tool_calls(value["tool_calls"], f"{where}.tool_calls")
    if role == "assistant" and content is None and not tool_calls:
        raise _fail(f"`{where}.content` is required unless the message has tool_calls.", f"{where}.content")
    return Message(
        role=role,
        content=content,
        name=value["name"] if isinstance(value.get("name"), str) else None,
        tool_calls=tool_calls,
        tool_call_id=string(value.get("tool_call_id"), f"{where}.tool_call_id") if role == "tool" else None,
    )


def turn_of(value: Any, index: int) -> Message:
    """One message in Chat Completions' JSON shape (as `Conversation.messages` writes it) as a turn."""
    return _message(value, index)


def tool_name(value: Any, param: str) -> str:
    if not isinstance(value, str) or not TOOL_NAME.match(value):
        raise _fail(f"`{param}` must match ^[A-Za-z0-9_-]{{1,64}}$.", param)
    return value


def schema(value: Any, param: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise _fail(f"`{param}` must be a JSON Schema object.", param)
    return value


def _tools(body: dict[str, Any]) -> tuple[tuple[Tool, ...], ToolChoice | None]:
    choice = body.get("tool_choice")
    tool_choice: ToolChoice | None = None
    if choice is not None:
        if one_of(choice, {"none", "auto", "required"}):
            tool_choice = choice
        else:
            function = choice.get("function") if isinstance(choice, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise _fail(
                    "`tool_choice` must be none, auto, required or a function selector.", "tool_choice"
                )
            tool_choice = NamedTool(function["name"])
    tools = body.get("tools")
    if tools is None:
        return (), tool_choice
    if not isinstance(tools, list) or len(tools) > 128:
        raise _fail("`tools` must be an array of at most 128 tools.", "tools")
    parsed = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise _fail(f"`{where}` must be a function tool.", where)
        description, strict = function.get("description"), function.get("strict")
        parsed.append(
            Tool(
                name=tool_name(function.get("name"), f"{where}.function.name"),
                description=description if isinstance(description, str) else None,
                parameters=schema(function.get("parameters"), f"{where}.function.parameters"),
                strict=strict if isinstance(strict, bool) else None,
            )
        )
    return tuple(parsed), tool_choice


def _response_format(value: Any) -> OutputFormat | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("`response_format` has the wrong type.", "response_format")
    kind = value.get("type")
    if not one_of(kind, {"text", "json_object", "json_schema"}):
        raise _fail("`response_format.type` must be text, json_object or json_schema.", "response_format")
    if kind == "text" or kind == "json_object":
        return OutputFormat(type=kind)
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _fail("`response_format.json_schema` must be an object.", "response_format.json_schema")
    name, description, strict = spec.get("name"), spec.get("description"), spec.get("strict")
    return OutputFormat(
        type="json_schema",
        name=name if isinstance(name, str) else None,
        schema=schema(spec.get("schema"), "response_format.json_schema.schema"),
        strict=strict if isinstance(strict, bool) else None,
        description=description if isinstance(description, str) else None,
    )


def stop_sequences(value: Any, param: str) -> tuple[str, ...] | str | None:
    if value is None or isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and len(value) <= MAX_STOP_SEQUENCES
        and all(isinstance(s, str) for s in value)
    ):
        return tuple(value)
    raise _fail(f"`{param}` must be a string or up to 4 strings.", param)


def validate(body: dict[str, Any]) -> Conversation:
    """A `Conversation` from a parsed Chat Completions body, or `InvalidArgument` naming what is wrong."""
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 200:
        raise _fail(
            "`model` must be a model id or a routing profile (auto, cheap, medium, premium).", "model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("`messages` must be a non-empty array.", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("`stream` must be true or false.", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or not isinstance(
        stream_options.get("include_usage", False), bool
    ):
        raise _fail("`stream_options.include_usage` must be true or false.", "stream_options")
    temperature = number(body, "temperature", 0, 2)
    top_p = number(body, "top_p", 0, 1)
    presence = number(body, "presence_penalty", -2, 2)
    frequency = number(body, "frequency_penalty", -2, 2)
    seed = integer(body, "seed", -(2**63), 2**63 - 1)
    if integer(body, "n", 1, 1_000_000) not in {None, 1}:
        raise _fail("`n` must be 1: this gateway returns one choice per request.", "n")
    limits = [integer(body, name, 1, 10_000_000) for name in ("max_completion_tokens", "max_tokens")]
    max_output = next((limit for limit in limits if limit is not None), None)
    stop = stop_sequences(body.get("stop"), "stop")
    for name, kind in (
        ("user", str),
        ("metadata", dict),
        ("parallel_tool_calls", bool),
        ("response_format", dict),
        ("reasoning_effort", str),
    ):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise _fail(f"`{name}` has the wrong type.", name)
    output_format = _response_format(body.get("response_format"))
    fallbacks = body.get("models") or []
    if not isinstance(fallbacks, list) or not all(isinstance(m, str) for m in fallbacks):
        raise _fail("`models` must be an array of model ids.", "models")
    turns = [_message(message, index) for index, message in enumerate(messages)]
    tools, tool_choice = _tools(body)
    return Conversation(
        model=model,
        turns=turns,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage", False)),
        max_output_tokens=max_output,
        temperature=temperature,
        top_p=top_p,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.get("parallel_tool_calls"),
        output_format=output_format,
        user=body.get("user"),
        metadata=body.get("metadata"),
        stop=stop,
        seed=seed,
        presence_penalty=presence,
        frequency_penalty=frequency,
        reasoning_effort=body.get("reasoning_effort"),
        fallback_models=list(fallbacks),
    )


def parse(raw: bytes) -> Conversation:
    """A raw Chat Completions body as a `Conversation`."""
    return validate(parse_body(raw))


# --- Answers -----------------------------------------------------------------------------------


def completion_id(call: CallInfo) -> str:
    return "chatcmpl-" + call.call_id.replace("-", "")


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


class ChatCompletions:
    """Answers as `chat.completion` documents and `chat.completion.chunk` streams."""

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage

    def body(self, call: CallInfo, answer: Answer, billed: Billed) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text if answer.text or not answer.tool_calls else None,
        }
        if answer.tool_calls:
            message["tool_calls"] = [tool_call_json(tool_call) for tool_call in answer.tool_calls]
        if answer.reasoning:
            message["reasoning_content"] = answer.reasoning
        return orjson.dumps(
            {
                "id": completion_id(call),
                "object": "chat.completion",
                "created": call.created,
                "model": call.model_id,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": answer.finish.reason, "logprobs": None}
                ],
                "usage": usage_json(billed.usage),
            }
        )

    def stream(self, call: CallInfo) -> StreamWriter:
        return ChunkWriter(call, self._include_usage)


class ChunkWriter:
    """One answer as `chat.completion.chunk` events; the first delta names the assistant's role."""

    def __init__(self, call: CallInfo, include_usage: bool) -> None:
        self._call = call
        self._include_usage = include_usage
        self._base = {
            "id": completion_id(call),
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model_id,
        }
        self._role_sent = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse.data({**self._base, "choices": [choice]})

    def write(self, event: AnswerEvent) -> bytes:
        if isinstance(event, Started):
            return b"" if self._role_sent else self._chunk({"content": ""})
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ReasoningDelta):
            return self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            function: dict[str, Any] = {"arguments": event.arguments}
            if event.name is not None:
                function = {"name": event.name, **function}
            return self._chunk({"tool_calls": [{**call, "function": function}]})
        if isinstance(event, Finish):
            return self._chunk({}, event.reason)
        if isinstance(event, Failure):
            return self.fail(event, Billed(Usage(0, 0), 0))
        return b""

    def close(self, billed: Billed) -> bytes:
        frames = b""
        if self._include_usage:
            frames += sse.data(
                {
                    **self._base,
                    "choices": [],
                    "usage": usage_json(billed.usage),
                    "crosscompute": crosscompute_json(billed, self._call.price_rule),
                }
            )
        return frames + sse.DONE

    def fail(self, failure: Failure, billed: Billed) -> bytes:
        # The headers are gone: a failure is reported in the stream itself, as an OpenAI error.
        return sse.data(error_object(failure.message, "api_error", failure.code, None))
