"""Anthropic's Messages API through the real Envoy with the official `anthropic` client, in front of
the fake provider speaking OpenAI's and Anthropic's wire formats; billed once, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
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
#: One model per upstream wire format.
OPENAI_MODEL = "openai/gpt-5-mini"
ANTHROPIC_MODEL = "anthropic/claude-haiku-4-5"
UPSTREAM_PATH = {OPENAI_MODEL: "/v1/chat/completions", ANTHROPIC_MODEL: "/v1/messages"}
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
START = 100_000_000


def fake_answer_micro(model: str) -> int:
    """What the fake's default answer (20 prompt tokens, 5 words) costs on `model`."""
    return bill(SPECS[model], Decimal(1000), Usage(PROMPT_TOKENS, COMPLETION_TOKENS))


@pytest.fixture(scope="module")
def providers(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider) -> Iterator[Gateway]:
    settings = gateway_settings(
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
    with running_gateway(settings) as running:
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
def client(providers: Gateway, key: str) -> Iterator[anthropic.Anthropic]:
    """The Anthropic SDK as people use it: the key as `x-api-key`, no retries (tests must see errors)."""
    with anthropic.Anthropic(base_url=providers.base_url, api_key=key, max_retries=0) as sdk:
        yield sdk


def balance(gateway: Gateway, person: Person) -> tuple[int, int]:
    """The account's balance and its ledger's sum."""
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
def test_a_plain_message_is_answered_billed_once_and_explained(
    providers: Gateway, person: Person, client: anthropic.Anthropic, fake: FakeProvider, model: str
) -> None:
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": "Hi"}],
        stop_sequences=["END"],
        extra_body={"temperature": 0.5},
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "".join(WORDS)  # type: ignore[union-attr]
    assert message.model == model
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert raw.headers["x-crosscompute-routing-profile"] == "explicit"
    assert raw.headers["x-crosscompute-routed-model"] == model
    billed = fake_answer_micro(model)
    assert raw.headers["x-crosscompute-billed-credits"] == f"{micro_to_credits(billed).normalize():f}"
    # The request went out in the upstream's own wire format.
    if model == OPENAI_MODEL:
        upstream = fake.last("/v1/chat/completions").body
        assert upstream["messages"][0] == {"role": "system", "content": "Be brief."}
        assert upstream["stop"] == ["END"] and upstream["max_completion_tokens"] == 50
    else:
        upstream = fake.last("/v1/messages").body
        assert upstream["system"] == "Be brief." and upstream["stop_sequences"] == ["END"]
    assert balance(providers, person) == (START - billed, START - billed)
    assert [(row["status"], row["billed_micro"]) for row in bills(providers, person)] == [("settled", billed)]


def test_a_profile_routes_and_says_why(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=50, messages=[{"role": "user", "content": "Say hello."}]
    )
    assert raw.parse().content[0].text == "".join(WORDS)  # type: ignore[union-attr]
    assert raw.headers["x-crosscompute-routing-profile"] == "auto"
    assert raw.headers["x-crosscompute-routing-tier"]
    assert raw.headers["x-crosscompute-routed-model"] in SPECS


def test_claude_code_style_bearer_auth_and_anthropic_version_are_accepted(
    providers: Gateway, key: str
) -> None:
    with anthropic.Anthropic(
        base_url=providers.base_url, auth_token=key, api_key=None, max_retries=0
    ) as bearer:
        message = bearer.messages.create(
            model=OPENAI_MODEL, max_tokens=20, messages=[{"role": "user", "content": "Hi"}]
        )
    assert message.content[0].text == "".join(WORDS)  # type: ignore[union-attr]
    response = httpx.post(
        f"{providers.base_url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2099-01-01"},
        json={"model": OPENAI_MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 200 and response.json()["type"] == "message"


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL])
def test_a_stream_has_anthropics_events_usage_and_routing_headers_and_bills_once(
    providers: Gateway, person: Person, client: anthropic.Anthropic, model: str
) -> None:
    with client.messages.stream(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        assert stream.response.headers["content-type"] == "text/event-stream"
        assert stream.response.headers["x-crosscompute-routed-model"] == model
        assert stream.response.headers["x-crosscompute-provider"] == model.split("/")[0]
        kinds = []
        text = ""
        for event in stream:
            kinds.append(event.type)
            if event.type == "text":
                text += event.text
        final = stream.get_final_message()
    assert text == "".join(WORDS)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == COMPLETION_TOKENS
    assert final.usage.input_tokens == PROMPT_TOKENS, "message_delta carries the provider's input count"
    billed = fake_answer_micro(model)
    assert balance(providers, person) == (START - billed, START - billed)
    assert [row["billed_micro"] for row in bills(providers, person)] == [billed]


def test_the_raw_stream_is_named_events_with_a_ping_and_the_bill(providers: Gateway, key: str) -> None:
    body = {
        "model": OPENAI_MODEL,
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with httpx.stream(
        "POST", f"{providers.base_url}/v1/messages", json=body, headers={"x-api-key": key}
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [data["type"] for data in datas] == names, "each event's type repeats its name"
    delta = datas[-2]
    assert delta["crosscompute"]["billed_credits"] == fake_answer_micro(OPENAI_MODEL) / 1_000_000


def test_a_cut_stream_ends_with_an_error_event_and_is_billed_for_what_was_sent(
    providers: Gateway, person: Person, client: anthropic.Anthropic
) -> None:
    pieces: list[str] = []

    def read() -> None:
        with client.messages.stream(
            model=OPENAI_MODEL, max_tokens=50, messages=[{"role": "user", "content": "[cut]"}]
        ) as stream:
            pieces.extend(stream.text_stream)

    with pytest.raises(anthropic.APIStatusError) as raised:
        read()
    assert pieces, "some of the answer arrived before the cut"
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    (row,) = bills(providers, person)
    assert row["status"] == "settled" and row["output_tokens"] >= 1 and row["billed_micro"] > 0
    assert balance(providers, person) == (START - row["billed_micro"],) * 2


@pytest.mark.parametrize(
    ("model", "path"), [(OPENAI_MODEL, "/v1/chat/completions"), (ANTHROPIC_MODEL, "/v1/messages")]
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip(
    client: anthropic.Anthropic, fake: FakeProvider, model: str, path: str, stream: bool
) -> None:
    question: Any = {"role": "user", "content": "Weather in Paris and Tokyo? [tool]"}
    asked: Any
    if stream:
        with client.messages.stream(
            model=model,
            max_tokens=100,
            tools=[WEATHER],
            messages=[question],
        ) as streamed:
            asked = streamed.get_final_message()
    else:
        asked = client.messages.create(
            model=model,
            max_tokens=100,
            tools=[WEATHER],
            messages=[question],
        )
    assert asked.stop_reason == "tool_use"
    uses = [block for block in asked.content if block.type == "tool_use"]
    assert [(use.name, use.input) for use in uses] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]
    results: Any = [
        {"type": "tool_result", "tool_use_id": use.id, "content": weather}
        for use, weather in zip(uses, ("Sunny", "Rain"), strict=True)
    ]
    answer = client.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": asked.content},
            {"role": "user", "content": results},
        ],
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text == "".join(WORDS)  # type: ignore[union-attr]
    upstream = fake.last(path).body
    if path == "/v1/chat/completions":
        assert [m["role"] for m in upstream["messages"]] == ["user", "assistant", "tool", "tool"]
        calls = upstream["messages"][1]["tool_calls"]
        assert [json.loads(call["function"]["arguments"]) for call in calls] == [
            {"city": "Paris"},
            {"city": "Tokyo"},
        ]
        assert [(m["tool_call_id"], m["content"]) for m in upstream["messages"][2:]] == [
            (uses[0].id, "Sunny"),
            (uses[1].id, "Rain"),
        ]
        assert upstream["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    else:
        assert [turn["role"] for turn in upstream["messages"]] == ["user", "assistant", "user"]
        assert [block["type"] for block in upstream["messages"][1]["content"]] == [
            "text",
            "tool_use",
            "tool_use",
        ]
        assert [block["content"] for block in upstream["messages"][2]["content"]] == ["Sunny", "Rain"]


def test_count_tokens_counts_what_would_be_sent_and_bills_nothing(
    providers: Gateway, person: Person, client: anthropic.Anthropic
) -> None:
    plain = client.messages.count_tokens(model=OPENAI_MODEL, messages=[{"role": "user", "content": "Hi"}])
    with_tool = client.messages.count_tokens(
        model=ANTHROPIC_MODEL,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hi"}],
        tools=[WEATHER],
    )
    assert 0 < plain.input_tokens < with_tool.input_tokens
    assert bills(providers, person) == []
    assert balance(providers, person) == (START, START)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.count_tokens(model="nope/none", messages=[{"role": "user", "content": "Hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_a_bad_key_is_an_authentication_error(providers: Gateway) -> None:
    for headers in ({"api_key": "cc_live_" + "x" * 43}, {"api_key": None, "auth_token": "not-a-key"}):
        with (
            anthropic.Anthropic(base_url=providers.base_url, max_retries=0, **headers) as stranger,
            pytest.raises(anthropic.AuthenticationError) as raised,
        ):
            stranger.messages.create(
                model=OPENAI_MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert raised.value.status_code == 401
        assert raised.value.body == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
        }
    response = httpx.post(f"{providers.base_url}/v1/messages", json={})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_too_few_credits_is_a_billing_error_the_sdk_raises_cleanly(
    person: Person, providers: Gateway
) -> None:
    person.bootstrap()
    tiny = person.post("/api/keys", {"label": "tiny", "quotaCredits": 0.000001}).json()["apiKey"]
    with (
        anthropic.Anthropic(base_url=providers.base_url, api_key=tiny, max_retries=0) as poor,
        pytest.raises(anthropic.PaymentRequiredError) as raised,
    ):
        poor.messages.create(model=OPENAI_MODEL, max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 402
    assert raised.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert "quota" in raised.value.body["error"]["message"]  # type: ignore[index]
    assert bills(providers, person) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": OPENAI_MODEL, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": OPENAI_MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
        (
            {
                "model": OPENAI_MODEL,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "video"}]}],
            },
            "video",
        ),
        (
            {
                "model": OPENAI_MODEL,
                "max_tokens": 5,
                "temperature": 1.5,
                "messages": [{"role": "user", "content": "x"}],
            },
            "temperature",
        ),
        (
            {
                "model": OPENAI_MODEL,
                "max_tokens": 5,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                "messages": [{"role": "user", "content": "x"}],
            },
            "custom",
        ),
        (
            {"model": "openai/gpt-7-ultra", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            "gpt-7",
        ),
    ],
)
def test_a_bad_body_is_an_invalid_request_error_and_changes_nothing(
    providers: Gateway, person: Person, key: str, body: dict[str, Any], says: str
) -> None:
    response = httpx.post(f"{providers.base_url}/v1/messages", json=body, headers={"x-api-key": key})
    expected = 404 if says == "gpt-7" else 400
    assert response.status_code == expected, response.text
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == ("not_found_error" if expected == 404 else "invalid_request_error")
    assert says in error["error"]["message"]
    assert bills(providers, person) == []
    assert balance(providers, person) == (START, START)


def test_unparseable_bodies_and_unknown_paths_answer_in_anthropics_shape(
    providers: Gateway, key: str
) -> None:
    response = httpx.post(
        f"{providers.base_url}/v1/messages",
        content=b"{not json",
        headers={"x-api-key": key, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    unknown = httpx.post(f"{providers.base_url}/v1/messages/batches", json={}, headers={"x-api-key": key})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Unknown route."},
    }


def test_an_exhausted_provider_is_overloaded_529_and_bills_nothing(
    providers: Gateway, person: Person, client: anthropic.Anthropic, fake: FakeProvider
) -> None:
    upstream = SPECS[ANTHROPIC_MODEL].upstream
    fake.failures[upstream] = "529"
    try:
        for stream in (False, True):
            with pytest.raises(anthropic.OverloadedError) as raised:
                client.messages.create(
                    model=ANTHROPIC_MODEL,
                    max_tokens=5,
                    messages=[{"role": "user", "content": "Hi"}],
                    stream=stream,
                )
            assert raised.value.status_code == 529
            assert raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    finally:
        del fake.failures[upstream]
    assert balance(providers, person) == (START, START)
    assert all(row["status"] != "settled" for row in bills(providers, person))


def test_a_failing_candidate_falls_back_and_only_the_answering_model_is_billed(
    providers: Gateway, person: Person, client: anthropic.Anthropic, fake: FakeProvider
) -> None:
    failing = SPECS["deepseek-chat"]  # the first cheap candidate of every tier
    # Refused credentials fall back like a 5xx but rest no model: nothing is left in the shared
    # database for later tests' routing.
    fake.failures[failing.upstream] = "401"
    start = len(fake.received)
    try:
        raw = client.messages.with_raw_response.create(
            model="cheap", max_tokens=20, messages=[{"role": "user", "content": "Hi"}]
        )
    finally:
        del fake.failures[failing.upstream]
    routed = raw.headers["x-crosscompute-routed-model"]
    tried = [received.body["model"] for received in fake.received[start:]]
    # The failing candidate came first and was passed over (unless an earlier test left it resting,
    # when it goes last and is not needed).
    assert tried[-1] == SPECS[routed].upstream and set(tried[:-1]) <= {failing.upstream}
    assert routed != failing.id and raw.parse().content[0].text == "".join(WORDS)  # type: ignore[union-attr]
    billed = fake_answer_micro(routed)
    assert [(row["model"], row["billed_micro"]) for row in bills(providers, person)] == [(routed, billed)]
    assert balance(providers, person) == (START - billed, START - billed)


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL])
def test_images_and_tool_choice_go_out_in_the_upstreams_own_format(
    client: anthropic.Anthropic, fake: FakeProvider, model: str
) -> None:
    pixel = "iVBORw0KGgo="
    content: Any = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}},
        {"type": "text", "text": "What is this?"},
    ]
    choice: Any = {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    client.messages.create(
        model=model,
        max_tokens=20,
        tools=[WEATHER],
        tool_choice=choice,
        messages=[{"role": "user", "content": content}],
    )
    upstream = fake.last(UPSTREAM_PATH[model]).body
    if model == OPENAI_MODEL:
        assert upstream["messages"][0]["content"] == [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
            {"type": "text", "text": "What is this?"},
        ]
        assert upstream["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        assert upstream["parallel_tool_calls"] is False
    else:
        assert upstream["messages"][0]["content"][0] == content[0]
        assert upstream["tool_choice"] == choice
