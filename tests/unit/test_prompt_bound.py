"""The hold's prompt estimate is an upper bound of what is sent: for any valid request, never below
the cl100k tokens of the JSON body the OpenAI-compatible and Anthropic clients actually send (each
image counted at its worst case instead of its bytes). Property tests, no network, no database."""

from __future__ import annotations

import json
from typing import Any, cast

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from server.domain.catalog import DEFAULT_CATALOG, ModelSpec, load_catalog_file
from server.domain.chat.request import ChatRequest, validate
from server.domain.chat.tokens import PER_IMAGE, count_prompt, count_text, hold_for_prompt
from server.domain.errors import InvalidArgument
from server.domain.providers.anthropic import messages_body
from server.domain.providers.openai_compat import OpenAICompatibleClient

SPECS = {spec.id: spec for spec in load_catalog_file(DEFAULT_CATALOG).models}
#: Both wire formats, and the OpenAI one with and without the developer-to-system rewrite.
OPENAI_LIKE = [SPECS["openai/gpt-5-mini"], SPECS["deepseek-chat"]]
ANTHROPIC = SPECS["anthropic/claude-sonnet-4-6"]
BIG_OUTPUT = 128_000

texts = st.text(max_size=120)
names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=16,
)
objects = st.dictionaries(texts, json_values, max_size=5)
images = st.one_of(
    st.builds(
        lambda kind, data: f"data:image/{kind};base64,{data}",
        st.sampled_from(["png", "jpeg", "webp", "svg+xml"]),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=", max_size=400),
    ),
    st.builds(lambda path: f"https://example.com/{path}", st.text(max_size=60)),
)
image_parts = st.builds(
    lambda url, detail: {
        "type": "image_url",
        "image_url": {"url": url, **({"detail": detail} if detail else {})},
    },
    images,
    st.sampled_from([None, "auto", "low", "high"]),
)
text_parts = st.builds(lambda text: {"type": "text", "text": text}, texts)
tool_calls = st.lists(
    st.builds(
        lambda call_id, name, arguments: {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        },
        texts,
        names,
        st.one_of(objects.map(lambda value: json.dumps(value)), texts),
    ),
    min_size=1,
    max_size=3,
)


def with_name(message: dict[str, Any], name: str | None) -> dict[str, Any]:
    return {**message, "name": name} if name is not None else message


messages = st.one_of(
    st.builds(
        lambda role, text: {"role": role, "content": text}, st.sampled_from(["system", "developer"]), texts
    ),
    st.builds(
        lambda content, name: with_name({"role": "user", "content": content}, name),
        texts | st.lists(text_parts | image_parts, min_size=1, max_size=3),
        st.none() | texts,
    ),
    st.builds(lambda text: {"role": "assistant", "content": text}, texts),
    st.builds(
        lambda text, calls: {"role": "assistant", "content": text, "tool_calls": calls},
        st.none() | texts,
        tool_calls,
    ),
    st.builds(lambda text, call_id: {"role": "tool", "content": text, "tool_call_id": call_id}, texts, texts),
)
tools = st.lists(
    st.builds(
        lambda name, description, parameters: {
            "type": "function",
            "function": {
                "name": name,
                **({"description": description} if description is not None else {}),
                **({"parameters": parameters} if parameters is not None else {}),
            },
        },
        names,
        st.none() | texts,
        st.none() | objects,
    ),
    min_size=1,
    max_size=16,
)
response_formats = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.builds(
        lambda name, schema: {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        },
        names,
        objects,
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    body: dict[str, Any] = {
        "model": "openai/gpt-5-mini",
        "messages": draw(st.lists(messages, min_size=1, max_size=30)),
    }
    if draw(st.booleans()):
        body["tools"] = draw(tools)
        if draw(st.booleans()):
            body["tool_choice"] = draw(
                st.sampled_from(["auto", "none", "required"])
                | names.map(lambda name: {"type": "function", "function": {"name": name}})
            )
        if draw(st.booleans()):
            body["parallel_tool_calls"] = draw(st.booleans())
    optional: dict[str, st.SearchStrategy[Any]] = {
        "response_format": response_formats,
        "stop": texts | st.lists(texts, max_size=4),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "user": texts,
        "metadata": st.dictionaries(texts, texts, max_size=4),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    body["stream"] = draw(st.booleans())
    try:
        return validate(body)
    except InvalidArgument:
        assume(False)
        raise


def sent_tokens(body: dict[str, Any]) -> int:
    """The cl100k tokens of a provider body as it goes on the wire, images without their bytes."""
    try:
        wire = orjson.dumps(body).decode()
    except orjson.JSONEncodeError:
        wire = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return count_text(wire)


def openai_body(spec: ModelSpec, request: ChatRequest) -> tuple[dict[str, Any], int]:
    body = OpenAICompatibleClient.body(cast(Any, None), spec, request, BIG_OUTPUT, stream=request.stream)
    found = 0
    for message in body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else ():
            if part["type"] == "image_url":
                found += 1
                url = part["image_url"]["url"]
                if url.startswith("data:"):
                    part["image_url"] = {**part["image_url"], "url": url.partition(",")[0] + ","}
    return body, found


def anthropic_body(request: ChatRequest) -> tuple[dict[str, Any], int]:
    body = {**messages_body(ANTHROPIC, request, BIG_OUTPUT), **({"stream": True} if request.stream else {})}
    found = 0
    for turn in body["messages"]:
        for block in turn["content"]:
            if block["type"] == "image":
                found += 1
                if block["source"]["type"] == "base64":
                    block["source"] = {**block["source"], "data": ""}
    return body, found


PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(requests())
def test_the_estimate_covers_the_openai_compatible_body_sent(request: ChatRequest) -> None:
    estimate = count_prompt(request.messages, request.options)
    for spec in OPENAI_LIKE:
        body, found = openai_body(spec, request)
        assert estimate >= sent_tokens(body) + PER_IMAGE * found, spec.id


@PROPERTY
@given(requests())
def test_the_estimate_covers_the_anthropic_body_sent(request: ChatRequest) -> None:
    body, found = anthropic_body(request)
    assert count_prompt(request.messages, request.options) >= sent_tokens(body) + PER_IMAGE * found


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 10**7))
def test_the_hold_adds_a_margin_for_other_tokenisers_on_top(counted: int) -> None:
    assert hold_for_prompt(counted) >= counted * 13 // 10


def test_a_large_json_schema_is_counted_whole() -> None:
    schema = {
        "type": "object",
        "properties": {f"field_{n}": {"type": "string", "description": "x " * 20} for n in range(900)},
    }
    request = validate(
        {
            "model": "openai/gpt-5",
            "messages": [{"role": "user", "content": "Fill it."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}},
            "max_tokens": 1,
        }
    )
    schema_tokens = count_text(json.dumps(schema, separators=(",", ":")))
    assert schema_tokens > 20_000
    assert count_prompt(request.messages, request.options) >= schema_tokens, (
        "the schema is part of the prompt"
    )


def test_many_short_turns_are_covered_in_anthropics_content_blocks() -> None:
    # Each Anthropic turn wraps its text in a content block: more tokens than OpenAI's plain string.
    turns = [{"role": ("user", "assistant")[n % 2], "content": "ok"} for n in range(120)]
    request = validate({"model": "anthropic/claude-sonnet-4-6", "messages": turns})
    body, _ = anthropic_body(request)
    assert count_prompt(request.messages, request.options) >= sent_tokens(body)


def test_many_bare_tools_are_covered_in_anthropics_input_schemas() -> None:
    # A tool without a description or parameters goes to Anthropic with both filled in.
    bare = [{"type": "function", "function": {"name": f"t{n}"}} for n in range(64)]
    request = validate(
        {
            "model": "anthropic/claude-sonnet-4-6",
            "messages": [{"role": "user", "content": "x"}],
            "tools": bare,
        }
    )
    body, _ = anthropic_body(request)
    assert count_prompt(request.messages, request.options) >= sent_tokens(body)
