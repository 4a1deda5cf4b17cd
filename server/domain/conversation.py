"""The typed wire layer's model: one conversation request, and its answer as events, whatever API
the caller spoke and whichever provider answers.

Each API is one module of `server.domain.wire` that translates to and from these types: inbound,
Chat Completions, Responses and Messages; outbound, OpenAI-compatible providers and Anthropic.
Routing, holds, fallbacks, settlement and the `x-crosscompute-*` headers work on these types only,
so a new wire format touches one module.

A `Conversation` also has one JSON form, `messages` and `options`: Chat Completions' shape, the
lingua franca the router's classifier and NotDiamond read, and what the prompt's token bound counts
(it is never below what either outbound format sends; a property test checks it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True)
class Text:
    """A text part."""

    text: str


@dataclass(frozen=True)
class Image:
    """An image part: an http(s) URL or a `data:image/...;base64,` URL."""

    url: str
    detail: str | None = None


Part = Text | Image


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made; `arguments` is the JSON text it wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One turn. `content` is a string when the caller sent one (it goes upstream as given), parts
    otherwise, or None for an assistant turn that only calls tools. A `tool` turn answers the call
    `tool_call_id`; `is_error` says the tool failed (Anthropic's `is_error`)."""

    role: Role
    content: str | tuple[Part, ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined by spaces."""
        if isinstance(self.content, str):
            return self.content
        return " ".join(part.text for part in self.content or () if isinstance(part, Text))


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is its JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class NamedTool:
    """`tool_choice` naming the one function the model must call."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedTool


@dataclass(frozen=True)
class OutputFormat:
    """The answer's format: plain text, any JSON object, or JSON matching `schema`."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass
class Conversation:
    """A valid request in any API: the model or profile asked for, the turns, the options, and
    what billing and routing need. Wire modules build it; nothing downstream sees an API's JSON."""

    model: str
    turns: list[Message]
    stream: bool = False
    #: Chat Completions' `stream_options.include_usage`: whether a stream ends with a usage chunk.
    include_usage: bool = False
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    output_format: OutputFormat | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    stop: tuple[str, ...] | str | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    reasoning_effort: str | None = None
    #: OpenRouter-style fallbacks for an explicit model.
    fallback_models: list[str] = field(default_factory=list)

    @property
    def has_images(self) -> bool:
        return any(
            isinstance(part, Image)
            for turn in self.turns
            if not isinstance(turn.content, str)
            for part in turn.content or ()
        )

    @property
    def has_tools(self) -> bool:
        return bool(self.tools)

    @functools.cached_property
    def messages(self) -> list[dict[str, Any]]:
        """The turns in Chat Completions' JSON shape."""
        return [message_json(turn) for turn in self.turns]

    @functools.cached_property
    def options(self) -> dict[str, Any]:
        """The options in Chat Completions' JSON shape (only those set)."""
        options: dict[str, Any] = {}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if self.tools:
            options["tools"] = [tool_json(tool) for tool in self.tools]
        if self.tool_choice is not None:
            choice = self.tool_choice
            options["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if isinstance(choice, NamedTool)
                else choice
            )
        if self.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = self.parallel_tool_calls
        if self.output_format is not None:
            options["response_format"] = format_json(self.output_format)
        if self.user is not None:
            options["user"] = self.user
        if self.metadata is not None:
            options["metadata"] = self.metadata
        if self.stop is not None:
            options["stop"] = self.stop if isinstance(self.stop, str) else list(self.stop)
        for name in ("seed", "presence_penalty", "frequency_penalty", "reasoning_effort"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return options

    @property
    def last_user_text(self) -> str:
        last = next((turn for turn in reversed(self.turns) if turn.role == "user"), None)
        return last.text if last else ""


def part_json(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def message_json(turn: Message) -> dict[str, Any]:
    """One turn in Chat Completions' JSON shape."""
    content = turn.content
    message: dict[str, Any] = {
        "role": turn.role,
        "content": content
        if content is None or isinstance(content, str)
        else [part_json(p) for p in content],
    }
    if turn.name is not None:
        message["name"] = turn.name
    if turn.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in turn.tool_calls
        ]
    if turn.role == "tool":
        message["tool_call_id"] = turn.tool_call_id or ""
    return message


def tool_json(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def format_json(output: OutputFormat) -> dict[str, Any]:
    if output.type != "json_schema":
        return {"type": output.type}
    schema: dict[str, Any] = {"name": output.name or "response"}
    if output.description is not None:
        schema["description"] = output.description
    if output.schema is not None:
        schema["schema"] = output.schema
    if output.strict is not None:
        schema["strict"] = output.strict
    return {"type": "json_schema", "json_schema": schema}


# --- The answer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Tokens an upstream call consumed (`input_tokens` includes the cached ones)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class Started:
    """The provider began answering (the assistant's turn opens)."""


@dataclass(frozen=True)
class TextDelta:
    """More of the answer's text."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """More of a reasoning model's visible reasoning (DeepSeek's `reasoning_content`)."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """More of tool call number `index` (0, 1, ... in the answer). Its first delta carries `id` and
    `name`; later ones only more `arguments`."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class UsageReport:
    """What the provider says the call consumed (usually last)."""

    usage: Usage


@dataclass(frozen=True)
class Finish:
    """Why the answer ended; `stop_sequence` is the one that ended it, when known."""

    reason: FinishReason
    stop_sequence: str | None = None


@dataclass(frozen=True)
class Failure:
    """The answer broke off: the headers are gone, so each API says so in its stream."""

    message: str
    code: str


AnswerEvent = Started | TextDelta | ReasoningDelta | ToolCallDelta | UsageReport | Finish | Failure


@dataclass(frozen=True)
class Answer:
    """A whole answer (not streamed)."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish: Finish = Finish("stop")
    usage: Usage | None = None
    reasoning: str = ""

    def events(self) -> list[AnswerEvent]:
        """The same answer as the events a stream of it would carry."""
        events: list[AnswerEvent] = [Started()]
        if self.reasoning:
            events.append(ReasoningDelta(self.reasoning))
        if self.text:
            events.append(TextDelta(self.text))
        events += [
            ToolCallDelta(index, call.arguments, call.id, call.name)
            for index, call in enumerate(self.tool_calls)
        ]
        if self.usage is not None:
            events.append(UsageReport(self.usage))
        events.append(self.finish)
        return events


class AnswerBuilder:
    """Folds events into an `Answer` (what a stream produced so far, or a whole one)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self._ids: dict[int, tuple[str, str]] = {}
        self.usage: Usage | None = None
        self.finish: Finish | None = None

    def add(self, event: AnswerEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            if event.id is not None or event.name is not None:
                known = self._ids.get(event.index, ("", ""))
                self._ids[event.index] = (event.id or known[0], event.name or known[1])
            self._calls.setdefault(event.index, []).append(event.arguments)
        elif isinstance(event, UsageReport):
            self.usage = event.usage
        elif isinstance(event, Finish):
            self.finish = event

    @property
    def produced_text(self) -> str:
        """Everything the model wrote, as output tokens are counted for a stream that ends early."""
        calls = "".join(self._ids.get(i, ("", ""))[1] + "".join(parts) for i, parts in self._calls.items())
        return "".join(self._reasoning) + "".join(self._text) + calls

    def answer(self) -> Answer:
        calls = tuple(
            ToolCall(self._ids.get(i, ("", ""))[0], self._ids.get(i, ("", ""))[1], "".join(parts))
            for i, parts in sorted(self._calls.items())
        )
        finish = self.finish or Finish("tool_calls" if calls else "stop")
        return Answer(
            text="".join(self._text),
            tool_calls=calls,
            finish=finish,
            usage=self.usage,
            reasoning="".join(self._reasoning),
        )


# --- Rendering an answer in the caller's API ---------------------------------------------------


@dataclass(frozen=True)
class CallInfo:
    """What an API's answer names: our call id, the model that answered, and when."""

    call_id: str
    model_id: str
    price_rule: str
    created: int
    #: The prompt's tokens as counted here (an API that reports input before the provider does).
    counted_prompt: int


@dataclass(frozen=True)
class Billed:
    """The usage a call was billed for, and what it cost."""

    usage: Usage
    billed_micro: int


class StreamWriter(Protocol):
    """One streamed answer in one API's events: fed every event, then closed once, billed."""

    def write(self, event: AnswerEvent) -> bytes:
        """The frames for one event (often none: an API may wait for more)."""
        ...

    def close(self, billed: Billed) -> bytes:
        """The stream's last frames, once the call is billed."""
        ...

    def fail(self, failure: Failure, billed: Billed) -> bytes:
        """The stream's last frames when it broke off (billed for what it produced)."""
        ...


class Rendering(Protocol):
    """How one API answers: a whole body, or a stream."""

    def body(self, call: CallInfo, answer: Answer, billed: Billed) -> bytes: ...

    def stream(self, call: CallInfo) -> StreamWriter: ...
