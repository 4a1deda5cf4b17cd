"""OpenAI's Responses API through the real Envoy with the official `openai` client's `responses`, in
front of the fake provider speaking OpenAI's and Anthropic's wire formats; billed once, stored per
account in the database (so a second replica continues a conversation), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from server.domain.catalog import DEFAULT_CATALOG, load_catalog_file
from server.domain.chat.billing import bill
from server.domain.credits import micro_to_credits
from server.domain.providers.base import Usage
from tests.conftest import gateway_settings
from tests.support.db import query
from tests.support.fake_provider import COMPLETION_TOKENS, PROMPT_TOKENS, WORDS, FakeProvider
from tests.support.gateway import Gateway, running_gateway
from tests.support.people import Person, sign_in
from tests.support.supabase import SupabaseStandIn

SPECS = {spec.id: spec for spec in load_catalog_file(DEFAULT_CATALOG).models}
OPENAI_MODEL = "openai/gpt-5-mini"
ANTHROPIC_MODEL = "anthropic/claude-haiku-4-5"
UPSTREAM_PATHS = {OPENAI_MODEL: "/v1/chat/completions", ANTHROPIC_MODEL: "/v1/messages"}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
START = 100_000_000
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * len(WORDS),
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def fake_answer_micro(model: str) -> int:
    return bill(SPECS[model], Decimal(1000), Usage(PROMPT_TOKENS, COMPLETION_TOKENS))


def settings_for(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider) -> Any:
    return gateway_settings(
        database_url,
        supabase,
        OPENAI_API_KEY="sk-fake-openai-secret",
        OPENAI_BASE_URL=f"{fake.url}/v1",
        ANTHROPIC_API_KEY="sk-ant-fake-secret",
        ANTHROPIC_BASE_URL=fake.url,
        DEEPSEEK_API_KEY="sk-fake-deepseek",
        DEEPSEEK_BASE_URL=f"{fake.url}/v1",
        CROSSCOMPUTE_UPSTREAM_TIMEOUT_SECONDS="20",
    )


@pytest.fixture(scope="module")
def providers(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider) -> Iterator[Gateway]:
    with running_gateway(settings_for(database_url, supabase, fake)) as running:
        yield running


@pytest.fixture(scope="module")
def replica(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider) -> Iterator[Gateway]:
    """A second gateway (its own server and Envoy) on the same database."""
    with running_gateway(settings_for(database_url, supabase, fake)) as running:
        yield running


@pytest.fixture
def person(providers: Gateway, supabase: SupabaseStandIn) -> Iterator[Person]:
    with httpx.Client(base_url=providers.base_url, timeout=30) as client:
        yield sign_in(providers, supabase, client)


@pytest.fixture
def key(person: Person) -> str:
    secret: str = person.bootstrap()["apiKey"]
    return secret


@pytest.fixture
def client(person: Person, key: str) -> openai.OpenAI:
    return person.openai(key)


def balance(gateway: Gateway, person: Person) -> tuple[int, int]:
    account = query(
        gateway.settings,
        "SELECT id, balance_micro FROM accounts WHERE kind = 'person' AND external_id = :sub",
        sub=person.user_id,
    )[0]
    total = query(
        gateway.settings,
        "SELECT COALESCE(SUM(amount_micro), 0) AS total FROM ledger_entries WHERE account_id = :id",
        id=account["id"],
    )[0]["total"]
    return int(account["balance_micro"]), int(total)


def bills(gateway: Gateway, person: Person) -> list[dict[str, Any]]:
    return query(
        gateway.settings,
        "SELECT u.* FROM usage_records u JOIN accounts a ON a.id = u.account_id "
        "WHERE a.external_id = :sub ORDER BY u.created_at",
        sub=person.user_id,
    )


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL])
def test_a_plain_response_is_answered_billed_once_and_explained(
    providers: Gateway, person: Person, client: openai.OpenAI, fake: FakeProvider, model: str
) -> None:
    raw = client.responses.with_raw_response.create(
        model=model, instructions="Be brief.", input="Hi", max_output_tokens=50, temperature=0.5
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == model
    assert response.output_text == "".join(WORDS)
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert response.instructions == "Be brief." and response.max_output_tokens == 50
    assert raw.headers["x-crosscompute-routing-profile"] == "explicit"
    assert raw.headers["x-crosscompute-routed-model"] == model
    billed = fake_answer_micro(model)
    assert raw.headers["x-crosscompute-billed-credits"] == f"{micro_to_credits(billed).normalize():f}"
    upstream = fake.last(UPSTREAM_PATHS[model]).body
    if model == OPENAI_MODEL:
        assert upstream["messages"] == [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ]
        assert upstream["max_completion_tokens"] == 50 and upstream["temperature"] == 0.5
    else:
        assert upstream["system"] == "Be brief." and upstream["max_tokens"] == 50
    assert balance(providers, person) == (START - billed, START - billed)
    assert [row["billed_micro"] for row in bills(providers, person)] == [billed]


def test_items_parts_json_schema_and_metadata_reach_the_provider(
    client: openai.OpenAI, fake: FakeProvider
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    items: Any = [
        {"role": "developer", "content": "Answer in JSON."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this picture?"},
                {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
            ],
        },
    ]
    text_format: Any = {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}}
    response = client.responses.create(
        model="auto",
        input=items,
        text=text_format,
        metadata={"ticket": "42"},
        user="user-7",
        max_output_tokens=40,
    )
    assert response.metadata == {"ticket": "42"}
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    upstream = fake.received[-1].body
    if fake.received[-1].path == "/v1/chat/completions":
        assert upstream["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        }
        assert upstream["messages"][1]["content"][1] == {
            "type": "image_url",
            "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
        }


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL])
def test_a_stream_is_the_official_event_sequence_numbered_and_billed_once(
    providers: Gateway, person: Person, client: openai.OpenAI, model: str
) -> None:
    with client.responses.with_streaming_response.create(model=model, input="Hi", stream=True) as raw:
        assert raw.headers["content-type"] == "text/event-stream"
        assert raw.headers["x-crosscompute-routed-model"] == model
        events = list(raw.parse())
    assert [event.type for event in events] == TEXT_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == "".join(WORDS)
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.status == "completed" and completed.output_text == deltas
    assert completed.usage is not None and completed.usage.output_tokens == COMPLETION_TOKENS
    billed = fake_answer_micro(model)
    assert completed.model_extra is not None
    assert completed.model_extra["crosscompute"]["billed_credits"] == billed / 1_000_000
    assert balance(providers, person) == (START - billed, START - billed)
    assert [row["billed_micro"] for row in bills(providers, person)] == [billed]


def test_the_raw_stream_has_named_events_and_no_done(providers: Gateway, key: str) -> None:
    with httpx.stream(
        "POST",
        f"{providers.base_url}/v1/responses",
        json={"model": OPENAI_MODEL, "input": "Hi", "stream": True},
        headers={"authorization": f"Bearer {key}"},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == TEXT_EVENTS and [data["type"] for data in datas] == names
    assert "data: [DONE]" not in lines


def test_a_cut_stream_ends_failed_and_is_billed_for_what_was_sent(
    providers: Gateway, person: Person, client: openai.OpenAI
) -> None:
    events = list(client.responses.create(model=OPENAI_MODEL, input="[cut]", stream=True))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert "provider" in failed.error.message.lower()
    assert any(event.type == "response.output_text.delta" for event in events)
    (row,) = bills(providers, person)
    assert row["status"] == "settled" and row["output_tokens"] >= 1 and row["billed_micro"] > 0
    assert balance(providers, person) == (START - row["billed_micro"],) * 2


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL])
@pytest.mark.parametrize("stream", [False, True])
def test_a_function_call_round_trip(
    client: openai.OpenAI, fake: FakeProvider, model: str, stream: bool
) -> None:
    asked: Any
    if stream:
        events = list(
            client.responses.create(model=model, input="Weather? [tool]", tools=[WEATHER], stream=True)
        )
        kinds = [event.type for event in events]
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
        assert [event.sequence_number for event in events] == list(range(len(events)))
        asked = events[-1].response  # type: ignore[union-attr]
    else:
        asked = client.responses.create(model=model, input="Weather? [tool]", tools=[WEATHER])
    calls = [item for item in asked.output if item.type == "function_call"]
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]
    outputs: Any = [
        {"type": "function_call_output", "call_id": call.call_id, "output": weather}
        for call, weather in zip(calls, ("Sunny", "Rain"), strict=True)
    ]
    history: Any = [
        {"role": "user", "content": "Weather?"},
        *[
            {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments}
            for c in calls
        ],
        *outputs,
    ]
    answer = client.responses.create(model=model, tools=[WEATHER], input=history)
    assert answer.output_text == "".join(WORDS)
    upstream = fake.last(UPSTREAM_PATHS[model]).body
    if model == OPENAI_MODEL:
        assert [m["role"] for m in upstream["messages"]] == ["user", "assistant", "tool", "tool"]
        assert [call["id"] for call in upstream["messages"][1]["tool_calls"]] == [c.call_id for c in calls]
        assert [m["content"] for m in upstream["messages"][2:]] == ["Sunny", "Rain"]
        assert upstream["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": WEATHER["description"],
                    "parameters": WEATHER["parameters"],
                },
            }
        ]
    else:
        assert [turn["role"] for turn in upstream["messages"]] == ["user", "assistant", "user"]
        assert [block["type"] for block in upstream["messages"][1]["content"]] == ["tool_use", "tool_use"]
        assert [block["content"] for block in upstream["messages"][2]["content"]] == ["Sunny", "Rain"]


def test_previous_response_id_continues_on_another_replica_and_read_and_delete_work_there(
    providers: Gateway, replica: Gateway, person: Person, key: str, fake: FakeProvider
) -> None:
    first = person.openai(key).responses.create(
        model=OPENAI_MODEL, instructions="Be brief.", input="I am Ada."
    )
    with openai.OpenAI(base_url=f"{replica.base_url}/v1", api_key=key, max_retries=0) as other:
        second = other.responses.create(
            model=ANTHROPIC_MODEL, previous_response_id=first.id, input="Who am I?", stream=True
        )
        completed = list(second)[-1].response  # type: ignore[union-attr]
        assert completed.previous_response_id == first.id
        upstream = fake.last("/v1/messages").body
        assert "system" not in upstream, "instructions are not carried over"
        assert upstream["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "I am Ada."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "".join(WORDS)}]},
            {"role": "user", "content": [{"type": "text", "text": "Who am I?"}]},
        ]
        # The streamed response was stored too, before its last event: a third turn continues it.
        third = other.responses.create(model=OPENAI_MODEL, previous_response_id=completed.id, input="Again?")
        assert [m["content"] for m in fake.last("/v1/chat/completions").body["messages"]] == [
            "I am Ada.",
            "".join(WORDS),
            "Who am I?",
            "".join(WORDS),
            "Again?",
        ]
        read = other.responses.retrieve(first.id)
        assert (read.id, read.output_text, read.instructions) == (first.id, first.output_text, "Be brief.")
        other.responses.delete(first.id)  # the client returns nothing for a delete that succeeded
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(first.id)
        with pytest.raises(openai.BadRequestError) as gone:
            other.responses.create(model=OPENAI_MODEL, previous_response_id=first.id, input="x")
        assert gone.value.code == "previous_response_not_found" and gone.value.param == "previous_response_id"
        assert other.responses.retrieve(third.id).output_text == "".join(WORDS)


def test_another_accounts_response_cannot_be_read_continued_or_deleted(
    providers: Gateway, person: Person, key: str, supabase: SupabaseStandIn, fake: FakeProvider
) -> None:
    mine = person.openai(key).responses.create(model=OPENAI_MODEL, input="A secret: 7.")
    with httpx.Client(base_url=providers.base_url, timeout=30) as http:
        stranger = sign_in(providers, supabase, http)
        theirs = stranger.openai(stranger.bootstrap()["apiKey"])
        calls = len(fake.received)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.delete(mine.id)
        with pytest.raises(openai.BadRequestError) as refused:
            theirs.responses.create(
                model=OPENAI_MODEL, previous_response_id=mine.id, input="Tell me the secret."
            )
        assert refused.value.code == "previous_response_not_found"
        assert len(fake.received) == calls, "no provider was asked"
        assert bills(providers, stranger) == []
        assert balance(providers, stranger) == (START, START)
    assert person.openai(key).responses.retrieve(mine.id).output_text == "".join(WORDS), "still there"


def test_store_false_keeps_nothing(providers: Gateway, client: openai.OpenAI) -> None:
    response = client.responses.create(model=OPENAI_MODEL, input="Hi", store=False)
    assert (response.model_extra or {})["store"] is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    assert query(providers.settings, "SELECT id FROM responses WHERE id = :id", id=response.id) == []


def test_errors_take_openais_shape(
    providers: Gateway, person: Person, client: openai.OpenAI, fake: FakeProvider
) -> None:
    with (
        openai.OpenAI(
            base_url=f"{providers.base_url}/v1", api_key="cc_live_" + "x" * 43, max_retries=0
        ) as bad,
        pytest.raises(openai.AuthenticationError) as unknown,
    ):
        bad.responses.create(model=OPENAI_MODEL, input="Hi")
    assert unknown.value.code == "invalid_api_key"
    tiny = person.openai(
        person.post("/api/keys", {"label": "tiny", "quotaCredits": 0.000001}).json()["apiKey"]
    )
    with pytest.raises(openai.APIStatusError) as poor:
        tiny.responses.create(model=OPENAI_MODEL, input="Hi")
    assert poor.value.status_code == 402 and poor.value.code == "insufficient_credits"
    for body, param in (
        ({"model": OPENAI_MODEL}, "input"),
        ({"model": OPENAI_MODEL, "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": OPENAI_MODEL, "input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"model": OPENAI_MODEL, "input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
    ):
        with pytest.raises(openai.BadRequestError) as bad_body:
            client.responses.create(**body)
        assert bad_body.value.param == param
        assert bad_body.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    upstream = SPECS[OPENAI_MODEL].upstream
    fake.failures[upstream] = "529"
    try:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as exhausted:
                client.responses.create(model=OPENAI_MODEL, input="Hi", stream=stream)
            assert exhausted.value.status_code == 503 and exhausted.value.code == "provider_overloaded"
    finally:
        del fake.failures[upstream]
    assert bills(providers, person) == [] or all(
        row["status"] != "settled" for row in bills(providers, person)
    )
    assert balance(providers, person) == (START, START)


def test_a_failing_candidate_falls_back_and_only_the_answering_model_is_billed(
    providers: Gateway, person: Person, client: openai.OpenAI, fake: FakeProvider
) -> None:
    failing = SPECS["deepseek-chat"]  # the first cheap candidate of every tier
    # Refused credentials fall back like a 5xx but rest no model: nothing is left in the shared
    # database for later tests' routing.
    fake.failures[failing.upstream] = "401"
    start = len(fake.received)
    try:
        raw = client.responses.with_raw_response.create(model="cheap", input="Hi", max_output_tokens=20)
    finally:
        del fake.failures[failing.upstream]
    routed = raw.headers["x-crosscompute-routed-model"]
    tried = [received.body["model"] for received in fake.received[start:]]
    # The failing candidate came first and was passed over (unless an earlier test left it resting,
    # when it goes last and is not needed).
    assert tried[-1] == SPECS[routed].upstream and set(tried[:-1]) <= {failing.upstream}
    assert routed != failing.id and raw.parse().output_text == "".join(WORDS)
    billed = fake_answer_micro(routed)
    assert [(row["model"], row["billed_micro"]) for row in bills(providers, person)] == [(routed, billed)]
    assert balance(providers, person) == (START - billed, START - billed)
