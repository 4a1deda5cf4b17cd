"""Validating and normalising an OpenAI chat completion request, kept as raw JSON until here.

Bad input is an `InvalidArgument` naming the offending parameter (`param`, as OpenAI does).
Normalisation accepts what OpenAI clients send: the `developer` role, the Responses-style content
parts `input_text` and `input_image`, and `max_tokens` or `max_completion_tokens`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import InvalidArgument

ROLES = {"system", "developer", "user", "assistant", "tool"}
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_STOP_SEQUENCES = 4
#: Fields passed upstream when present (after validation); anything else is dropped.
PASSED_THROUGH = (
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
    "metadata",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
)


@dataclass
class ChatRequest:
    """A valid request: the model asked for, normalised messages and options, and what billing needs."""

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    stream: bool
    include_usage: bool
    max_output_tokens: int | None
    has_images: bool = False
    has_tools: bool = False
    fallback_models: list[str] = field(default_factory=list)


def text_of(content: Any) -> str:
    """The text of a message's content: the string, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _one_of(value: Any, options: set[str]) -> bool:
    """Whether `value` is one of the strings `options` (any JSON value may arrive here)."""
    return isinstance(value, str) and value in options


def _fail(message: str, param: str | None) -> InvalidArgument:
    return InvalidArgument(message, param=param, reason="INVALID_REQUEST")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _fail(f"The JSON body repeats the key `{key[:64]}`.", key[:64])
        result[key] = value
    return result


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (strict UTF-8, no duplicate keys, bounded nesting)."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, object_pairs_hook=_no_duplicates)
    except InvalidArgument:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also integers over 4300 digits
        raise InvalidArgument(
            "We could not parse the JSON body of your request: it must be a UTF-8 JSON object.",
            param=None,
            reason="INVALID_JSON",
        ) from None
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object.", param=None, reason="INVALID_JSON")
    return body


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"`{name}` must be a number from {low:g} to {high:g}.", name)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"`{name}` must be a whole number from {low} to {high}.", name)
    return value


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"`{param}` must be a string.", param)
    return value


def _image_url(part: dict[str, Any], param: str) -> dict[str, Any]:
    source = part.get("image_url", part.get("url"))
    if isinstance(source, dict):
        url, detail = source.get("url"), source.get("detail")
    else:
        url, detail = source, part.get("detail")
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:image/")):
        raise _fail(f"`{param}` needs an image URL (http(s) or a data:image/ URL).", param)
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        if not _one_of(detail, {"auto", "low", "high"}):
            raise _fail(f"`{param}.detail` must be auto, low or high.", f"{param}.detail")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _content(value: Any, role: str, param: str, request: ChatRequest) -> Any:
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return None
    if not isinstance(value, list) or not value:
        raise _fail(f"`{param}` must be a string or a non-empty array of content parts.", param)
    parts = []
    for index, part in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise _fail(f"`{where}` must be an object.", where)
        kind = part.get("type")
        if _one_of(kind, {"text", "input_text"}):
            parts.append({"type": "text", "text": _text(part.get("text"), f"{where}.text")})
        elif _one_of(kind, {"image_url", "input_image"}) and role == "user":
            parts.append(_image_url(part, where))
            request.has_images = True
        else:
            raise _fail(
                f"`{where}.type` {str(kind)[:40]!r} is not a content part {role} messages accept.",
                f"{where}.type",
            )
    return parts


def _tool_calls(value: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _fail(f"`{param}` must be a non-empty array.", param)
    calls = []
    for index, call in enumerate(value):
        where = f"{param}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise _fail(f"`{where}` must have an `id` and a `function`.", where)
        calls.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": _text(function.get("name"), f"{where}.function.name"),
                    "arguments": _text(function.get("arguments", "{}"), f"{where}.function.arguments"),
                },
            }
        )
    return calls


def _message(value: Any, index: int, request: ChatRequest) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(value, dict):
        raise _fail(f"`{where}` must be an object.", where)
    if not _one_of(value.get("role"), ROLES):
        raise _fail(f"`{where}.role` must be one of {', '.join(sorted(ROLES))}.", f"{where}.role")
    role = str(value["role"])
    message: dict[str, Any] = {
        "role": role,
        "content": _content(value.get("content"), role, f"{where}.content", request),
    }
    if isinstance(value.get("name"), str):
        message["name"] = value["name"]
    if role == "assistant" and value.get("tool_calls") is not None:
        message["tool_calls"] = _tool_calls(value["tool_calls"], f"{where}.tool_calls")
    if role == "assistant" and message["content"] is None and "tool_calls" not in message:
        raise _fail(f"`{where}.content` is required unless the message has tool_calls.", f"{where}.content")
    if role == "tool":
        message["tool_call_id"] = _text(value.get("tool_call_id"), f"{where}.tool_call_id")
    return message


def _tools(body: dict[str, Any], request: ChatRequest) -> None:
    choice = body.get("tool_choice")
    if choice is not None and not _one_of(choice, {"none", "auto", "required"}):
        function = choice.get("function") if isinstance(choice, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _fail("`tool_choice` must be none, auto, required or a function selector.", "tool_choice")
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list) or len(tools) > 128:
        raise _fail("`tools` must be an array of at most 128 tools.", "tools")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise _fail(f"`{where}` must be a function tool.", where)
        if not isinstance(function.get("name"), str) or not TOOL_NAME.match(function["name"]):
            raise _fail(
                f"`{where}.function.name` must match ^[A-Za-z0-9_-]{{1,64}}$.", f"{where}.function.name"
            )
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise _fail(
                f"`{where}.function.parameters` must be a JSON Schema object.", f"{where}.function.parameters"
            )
    request.has_tools = bool(tools)


def validate(body: dict[str, Any]) -> ChatRequest:
    """A `ChatRequest` from a parsed body, or `InvalidArgument` naming what is wrong."""
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
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _integer(body, "seed", -(2**63), 2**63 - 1)
    if _integer(body, "n", 1, 1_000_000) not in {None, 1}:
        raise _fail("`n` must be 1: this gateway returns one choice per request.", "n")
    limits = [_integer(body, name, 1, 10_000_000) for name in ("max_completion_tokens", "max_tokens")]
    max_output = next((limit for limit in limits if limit is not None), None)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (
            isinstance(stop, list)
            and len(stop) <= MAX_STOP_SEQUENCES
            and all(isinstance(s, str) for s in stop)
        )
    ):
        raise _fail("`stop` must be a string or up to 4 strings.", "stop")
    for name, kind in (
        ("user", str),
        ("metadata", dict),
        ("parallel_tool_calls", bool),
        ("response_format", dict),
    ):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise _fail(f"`{name}` has the wrong type.", name)
    response_format = body.get("response_format")
    if response_format is not None and not _one_of(
        response_format.get("type"), {"text", "json_object", "json_schema"}
    ):
        raise _fail("`response_format.type` must be text, json_object or json_schema.", "response_format")
    fallbacks = body.get("models") or []
    if not isinstance(fallbacks, list) or not all(isinstance(m, str) for m in fallbacks):
        raise _fail("`models` must be an array of model ids.", "models")
    request = ChatRequest(
        model=model,
        messages=[],
        options={name: body[name] for name in PASSED_THROUGH if body.get(name) is not None},
        stream=stream,
        include_usage=bool(stream_options.get("include_usage", False)),
        max_output_tokens=max_output,
        fallback_models=list(fallbacks),
    )
    request.messages = [_message(message, index, request) for index, message in enumerate(messages)]
    _tools(body, request)
    return request
