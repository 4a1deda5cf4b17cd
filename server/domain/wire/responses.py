"""Inbound: OpenAI's Responses API (`POST /v1/responses`).

Requests become a `Conversation`: `input` as a string or items (messages with `input_text` /
`input_image` / `output_text` parts, `function_call` and `function_call_output` items; reasoning
items are not sent on), `instructions`, flat function tools and `tool_choice`,
`parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`, `text.format` (JSON schema),
`metadata`, `user`, `reasoning.effort`; `store` and `previous_response_id` are the caller's
business (`server.domain.responses`). Answers are rendered as a `response` object, or streamed as
typed events with `sequence_number`s from `response.created` to `response.completed` (or
`response.incomplete`, or `response.failed` with the error); errors take OpenAI's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from server.domain.conversation import (
    Answer,
    AnswerBuilder,
    AnswerEvent,
    Billed,
    CallInfo,
    Conversation,
    Failure,
    Finish,
    Message,
    NamedTool,
    OutputFormat,
    Part,
    Role,
    StreamWriter,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    format_json,
)
from server.domain.credits import micro_to_wire
from server.domain.errors import InvalidArgument
from server.domain.wire import sse
from server.domain.wire.chat_completions import image_part, integer, number, one_of, schema, tool_name
from server.domain.wire.json_body import parse_body

MESSAGE_ROLES = {"user", "assistant", "system", "developer"}


def _fail(message: str, param: str | None) -> InvalidArgument:
    return InvalidArgument(message, param=param, reason="INVALID_REQUEST")


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"`{param}` must be a string.", param)
    return value


@dataclass
class ResponseRequest:
    """A Responses request: its conversation, and what the response object echoes or the gateway
    keeps. `conversation.turns` holds the new input only until a previous response is prepended."""

    conversation: Conversation
    input_turns: list[Message]
    instructions: str | None = None
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def continuing(self, earlier: list[Message]) -> None:
        """Continue after `earlier` turns (a previous response's conversation, its output included):
        the earlier instructions are not carried over, as OpenAI's API does."""
        self.input_turns = [*earlier, *self.input_turns]
        system = [Message(role="developer", content=self.instructions)] if self.instructions else []
        self.conversation.turns = [*system, *self.input_turns]


def _content(value: Any, role: str, where: str) -> str | tuple[Part, ...]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise _fail(f"`{where}` must be a string or a non-empty array of content parts.", where)
    parts: list[Part] = []
    for index, part in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise _fail(f"`{at}` must be an object.", at)
        kind = part.get("type")
        if one_of(kind, {"input_text", "output_text", "text"}):
            parts.append(Text(_text(part.get("text"), f"{at}.text")))
        elif kind == "refusal" and role == "assistant":
            parts.append(Text(_text(part.get("refusal"), f"{at}.refusal")))
        elif kind == "input_image" and role == "user":
            if part.get("image_url") is None:
                raise _fail(f"`{at}` needs an `image_url` (file ids are not supported).", at)
            parts.append(image_part(part, at))
        else:
            raise _fail(
                f"`{at}.type` {str(kind)[:40]!r} is not a content part {role} messages accept.", f"{at}.type"
            )
    return tuple(parts)


def input_turns(value: Any) -> list[Message]:
    """The `input` string or items as turns; consecutive assistant output and function calls are
    one assistant turn, as Chat Completions and Anthropic want them."""
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list) or not value:
        raise _fail("`input` must be a string or a non-empty array of items.", "input")
    turns: list[Message] = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _fail(f"`{where}` must be an object.", where)
        kind = item.get("type", "message")
        if kind == "message":
            if not one_of(item.get("role"), MESSAGE_ROLES):
                raise _fail(f"`{where}.role` must be user, assistant, system or developer.", f"{where}.role")
            role: Role = item["role"]
            content = _content(item.get("content"), role, f"{where}.content")
            if role == "assistant":
                text = (
                    content
                    if isinstance(content, str)
                    else " ".join(p.text for p in content if isinstance(p, Text))
                )
                turns.append(Message(role="assistant", content=text))
            else:
                turns.append(Message(role=role, content=content))
        elif kind == "function_call":
            call = ToolCall(
                id=_text(item.get("call_id"), f"{where}.call_id"),
                name=_text(item.get("name"), f"{where}.name"),
                arguments=_text(item.get("arguments", "{}"), f"{where}.arguments"),
            )
            last = turns[-1] if turns else None
            if last is not None and last.role == "assistant":
                turns[-1] = Message(
                    role="assistant", content=last.content or None, tool_calls=(*last.tool_calls, call)
                )
            else:
                turns.append(Message(role="assistant", content=None, tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = _content(output, "user", f"{where}.output")
                output = " ".join(p.text for p in output if isinstance(p, Text))
            turns.append(
                Message(
                    role="tool",
                    content=_text(output, f"{where}.output"),
                    tool_call_id=_text(item.get("call_id"), f"{where}.call_id"),
                )
            )
        elif kind == "reasoning":
            continue  # a reasoning model's own items are not sent on to another model
        else:
            raise _fail(
                f"`{where}.type` {str(kind)[:40]!r} is not an input item this gateway accepts.",
                f"{where}.type",
            )
    return turns


def _tools(body: dict[str, Any]) -> tuple[tuple[Tool, ...], ToolChoice | None]:
    tools = body.get("tools")
    parsed: list[Tool] = []
    if tools is not None:
        if not isinstance(tools, list) or len(tools) > 128:
            raise _fail("`tools` must be an array of at most 128 tools.", "tools")
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise _fail(f"`{where}` must be a function tool (built-in tools are not supported).", where)
            description, strict = tool.get("description"), tool.get("strict")
            parsed.append(
                Tool(
                    name=tool_name(tool.get("name"), f"{where}.name"),
                    description=description if isinstance(description, str) else None,
                    parameters=schema(tool.get("parameters"), f"{where}.parameters"),
                    strict=strict if isinstance(strict, bool) else None,
                )
            )
    choice = body.get("tool_choice")
    if choice is None:
        return tuple(parsed), None
    if one_of(choice, {"auto", "none", "required"}):
        return tuple(parsed), choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return tuple(parsed), NamedTool(choice["name"])
    raise _fail("`tool_choice` must be auto, none, required or {type: function, name}.", "tool_choice")


def _format(body: dict[str, Any]) -> OutputFormat | None:
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _fail("`text` must be an object.", "text")
    spec = text.get("format")
    if spec is None:
        return None
    if not isinstance(spec, dict) or not one_of(spec.get("type"), {"text", "json_object", "json_schema"}):
        raise _fail("`text.format.type` must be text, json_object or json_schema.", "text.format")
    kind = spec["type"]
    if kind == "text" or kind == "json_object":
        return OutputFormat(type=kind)
    name, description, strict = spec.get("name"), spec.get("description"), spec.get("strict")
    return OutputFormat(
        type="json_schema",
        name=tool_name(name, "text.format.name"),
        schema=schema(spec.get("schema"), "text.format.schema"),
        strict=strict if isinstance(strict, bool) else None,
        description=description if isinstance(description, str) else None,
    )


def validate(body: dict[str, Any]) -> ResponseRequest:
    """A `ResponseRequest` from a Responses API body, or `InvalidArgument` naming what is wrong."""
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 200:
        raise _fail(
            "`model` must be a model id or a routing profile (auto, cheap, medium, premium).", "model"
        )
    turns = input_turns(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _fail("`instructions` must be a string.", "instructions")
    for name, kind in (("stream", bool), ("store", bool), ("parallel_tool_calls", bool), ("user", str)):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise _fail(f"`{name}` has the wrong type.", name)
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(isinstance(v, str) for v in metadata.values())
    ):
        raise _fail("`metadata` must be an object of at most 16 string values.", "metadata")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _fail("`previous_response_id` must be a response id.", "previous_response_id")
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort is not None and not isinstance(effort, str):
        raise _fail("`reasoning.effort` must be a string.", "reasoning.effort")
    tools, tool_choice = _tools(body)
    system = [Message(role="developer", content=instructions)] if instructions else []
    conversation = Conversation(
        model=model,
        turns=[*system, *turns],
        stream=bool(body.get("stream", False)),
        max_output_tokens=integer(body, "max_output_tokens", 1, 10_000_000),
        temperature=number(body, "temperature", 0, 2),
        top_p=number(body, "top_p", 0, 1),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.get("parallel_tool_calls"),
        output_format=_format(body),
        user=body.get("user"),
        metadata=metadata,
        reasoning_effort=effort,
    )
    return ResponseRequest(
        conversation=conversation,
        input_turns=turns,
        instructions=instructions,
        store=body.get("store", True) is not False,
        previous_response_id=previous,
        metadata=dict(metadata or {}),
    )


def parse(raw: bytes) -> ResponseRequest:
    return validate(parse_body(raw))


# --- Answers -----------------------------------------------------------------------------------


def response_id(call_id: str) -> str:
    return "resp_" + call_id.replace("-", "")


def usage_json(usage: Usage) -> dict[str, Any]:
    """The Responses API's usage object."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def tool_json(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.strict,
    }


def output_turn(answer: Answer) -> Message | None:
    """The answer as a turn of the conversation it continues."""
    if not answer.text and not answer.tool_calls:
        return None
    return Message(role="assistant", content=answer.text or None, tool_calls=answer.tool_calls)


class Responses:
    """Answers as `response` objects and their event streams. Keeps the last response object it
    rendered (`final`), for storing."""

    def __init__(self, request: ResponseRequest) -> None:
        self.request = request
        self.call: CallInfo | None = None
        self.final: dict[str, Any] | None = None

    def _ids(self, call: CallInfo) -> tuple[str, str]:
        hex_id = call.call_id.replace("-", "")
        return f"msg_{hex_id}", f"fc_{hex_id}"

    def message_item(self, call: CallInfo, text: str, status: str) -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {
            "type": "message",
            "id": self._ids(call)[0],
            "status": status,
            "role": "assistant",
            "content": [part] if status != "in_progress" else [],
        }

    def call_item(self, call: CallInfo, index: int, tool_call: ToolCall, status: str) -> dict[str, Any]:
        return {
            "type": "function_call",
            "id": f"{self._ids(call)[1]}_{index}",
            "call_id": tool_call.id,
            "name": tool_call.name,
            "arguments": tool_call.arguments,
            "status": status,
        }

    def response(
        self,
        call: CallInfo,
        status: str,
        output: list[dict[str, Any]],
        billed: Billed | None = None,
        finish: Finish | None = None,
        failure: Failure | None = None,
    ) -> dict[str, Any]:
        """The `response` object in its current state."""
        request = self.request
        conversation = request.conversation
        choice = conversation.tool_choice
        body: dict[str, Any] = {
            "id": response_id(call.call_id),
            "object": "response",
            "created_at": call.created,
            "status": status,
            "background": False,
            "error": ({"code": "server_error", "message": failure.message} if failure is not None else None),
            "incomplete_details": (
                {"reason": "max_output_tokens"} if finish is not None and finish.reason == "length" else None
            ),
            "instructions": request.instructions,
            "max_output_tokens": conversation.max_output_tokens,
            "metadata": request.metadata,
            "model": call.model_id,
            "output": output,
            "parallel_tool_calls": conversation.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": conversation.reasoning_effort, "summary": None},
            "store": request.store,
            "temperature": conversation.temperature,
            "text": {"format": format_json(conversation.output_format or OutputFormat("text"))},
            "tool_choice": (
                {"type": "function", "name": choice.name}
                if isinstance(choice, NamedTool)
                else choice or "auto"
            ),
            "tools": [tool_json(tool) for tool in conversation.tools],
            "top_p": conversation.top_p,
            "truncation": "disabled",
            "usage": usage_json(billed.usage) if billed is not None else None,
            "user": conversation.user,
        }
        if body["text"]["format"]["type"] == "json_schema":
            body["text"]["format"] = {"type": "json_schema", **body["text"]["format"]["json_schema"]}
        if billed is not None:
            body["crosscompute"] = {
                "billed_credits": micro_to_wire(billed.billed_micro),
                "price_rule": call.price_rule,
            }
        return body

    def outcome(
        self, call: CallInfo, answer: Answer, billed: Billed, failure: Failure | None = None
    ) -> dict[str, Any]:
        """The finished response for `answer` (stored as it is served)."""
        status = "failed" if failure else ("incomplete" if answer.finish.reason == "length" else "completed")
        item_status = "incomplete" if status != "completed" else "completed"
        output: list[dict[str, Any]] = []
        if answer.text:
            output.append(self.message_item(call, answer.text, item_status))
        output += [self.call_item(call, i, c, item_status) for i, c in enumerate(answer.tool_calls)]
        self.final = self.response(call, status, output, billed, answer.finish, failure)
        return self.final

    def body(self, call: CallInfo, answer: Answer, billed: Billed) -> bytes:
        self.call = call
        return orjson.dumps(self.outcome(call, answer, billed))

    def stream(self, call: CallInfo) -> StreamWriter:
        self.call = call
        return EventWriter(self, call)


class EventWriter:
    """One answer as Responses stream events, each with the next `sequence_number`: output items open
    as the answer's parts arrive and are done when the next begins."""

    def __init__(self, rendering: Responses, call: CallInfo) -> None:
        self._rendering = rendering
        self._call = call
        self._sequence = 0
        self._started = False
        self._built = AnswerBuilder()
        self._output: list[dict[str, Any]] = []
        #: The open item: ("message", None) or ("call", the call's index); None when none is open.
        self._open: tuple[str, int | None] | None = None
        self._call_items: dict[int, int] = {}
        self._message_text: list[str] = []

    def _event(self, kind: str, /, **payload: Any) -> bytes:
        frame = sse.event(kind, {"type": kind, **payload, "sequence_number": self._sequence})
        self._sequence += 1
        return frame

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = self._rendering.response(self._call, "in_progress", [])
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def _close_item(self) -> bytes:
        if self._open is None:
            return b""
        kind, index = self._open
        self._open = None
        position = len(self._output) - 1
        if kind == "message":
            item = self._rendering.message_item(self._call, "".join(self._message_text), "completed")
            part = item["content"][0]
            frames = self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=position,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            frames += self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=position,
                content_index=0,
                part=part,
            )
        else:
            assert index is not None
            tool_call = self._built.answer().tool_calls[index]
            item = self._rendering.call_item(self._call, index, tool_call, "completed")
            frames = self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=position,
                name=tool_call.name,
                arguments=tool_call.arguments,
            )
        self._output[position] = item
        return frames + self._event("response.output_item.done", output_index=position, item=item)

    def write(self, event: AnswerEvent) -> bytes:
        frames = self._start()
        self._built.add(event)
        if isinstance(event, TextDelta) and event.text:
            if self._open != ("message", None):
                frames += self._close_item()
                item = self._rendering.message_item(self._call, "", "in_progress")
                self._output.append(item)
                self._open = ("message", None)
                self._message_text = []
                position = len(self._output) - 1
                frames += self._event("response.output_item.added", output_index=position, item=item)
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                frames += self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=position,
                    content_index=0,
                    part=part,
                )
            self._message_text.append(event.text)
            frames += self._event(
                "response.output_text.delta",
                item_id=self._output[-1]["id"],
                output_index=len(self._output) - 1,
                content_index=0,
                delta=event.text,
                logprobs=[],
            )
        elif isinstance(event, ToolCallDelta):
            if event.index not in self._call_items:
                frames += self._close_item()
                pending = ToolCall(event.id or "", event.name or "", "")
                item = self._rendering.call_item(self._call, event.index, pending, "in_progress")
                self._output.append(item)
                self._call_items[event.index] = len(self._output) - 1
                self._open = ("call", event.index)
                frames += self._event(
                    "response.output_item.added", output_index=len(self._output) - 1, item=item
                )
            if event.arguments:
                position = self._call_items[event.index]
                frames += self._event(
                    "response.function_call_arguments.delta",
                    item_id=self._output[position]["id"],
                    output_index=position,
                    delta=event.arguments,
                )
        elif isinstance(event, Failure):
            frames += self.fail(event, Billed(Usage(0, 0), 0))
        return frames

    def close(self, billed: Billed) -> bytes:
        frames = self._start() + self._close_item()
        response = self._rendering.outcome(self._call, self._built.answer(), billed)
        name = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return frames + self._event(name, response=response)

    def fail(self, failure: Failure, billed: Billed) -> bytes:
        frames = self._start()
        response = self._rendering.outcome(self._call, self._built.answer(), billed, failure)
        return frames + self._event("response.failed", response=response)
