"""Chat completions through the real Envoy with the official `openai` client, against a local fake
provider speaking OpenAI's and Anthropic's wire formats; billed once, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import gateway_settings
from tests.support.db import query
from tests.support.fake_provider import COMPLETION_TOKENS, PROMPT_TOKENS, WORDS, FakeProvider
from tests.support.gateway import Gateway, running_gateway
from tests.support.people import Person, sign_in
from tests.support.supabase import SupabaseStandIn
from tests.support.waiting import eventually

PIXEL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake-pixel").decode()
# gpt-5-mini at 1000 credits per USD: 0.25 USD/M in, 2.00 USD/M out.
FAKE_ANSWER_MICRO = PROMPT_TOKENS * 250 + COMPLETION_TOKENS * 2000


@pytest.fixture(scope="module")
def providers(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider) -> Iterator[Gateway]:
    """A gateway whose OpenAI, Anthropic and DeepSeek providers are the fake one."""
    settings = gateway_settings(
        database_url,
        supabase,
        OPENAI_API_KEY="sk-fake-openai-secret",
        OPENAI_BASE_URL=f"{fake.url}/v1",
        ANTHROPIC_API_KEY="sk-ant-fake-secret",
        ANTHROPIC_BASE_URL=fake.url,
        DEEPSEEK_API_KEY="sk-fake-deepseek",
        OLLAMA_BASE_URL=f"{fake.url}/v1",
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
def client(person: Person) -> openai.OpenAI:
    return person.openai(person.bootstrap()["apiKey"])


def usage_rows(gateway: Gateway, key_prefix: str | None = None) -> list[dict[str, Any]]:
    return query(gateway.settings, "SELECT * FROM usage_records ORDER BY created_at")


def balance_and_ledger(gateway: Gateway, person: Person) -> tuple[int, int]:
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


def test_the_simulator_answers_out_of_the_box_and_says_it_is_not_real(
    gateway: Gateway, supabase: SupabaseStandIn
) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        person = sign_in(gateway, supabase, http)
        client = person.openai(person.bootstrap()["apiKey"])
        listed = {model.id: model for model in client.models.list().data}
        assert "NOT a real model" in str(listed["crosscompute/simulator"].model_extra)
        raw = client.chat.completions.with_raw_response.create(
            model="crosscompute/simulator", messages=[{"role": "user", "content": "Hello there"}]
        )
        completion = raw.parse()
        assert "not a real model" in (completion.choices[0].message.content or "")
        assert raw.headers["x-crosscompute-simulated"] == "true"
        assert raw.headers["x-crosscompute-provider"] == "simulator"
        assert raw.headers["x-crosscompute-billed-credits"] == "0", "the simulator is free"
        words = [
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="crosscompute/simulator",
                messages=[{"role": "user", "content": "Hello there"}],
                stream=True,
            )
            if chunk.choices
        ]
        assert "".join(words) == completion.choices[0].message.content


def test_a_plain_completion_is_parsed_billed_once_and_explained(
    providers: Gateway, person: Person, client: openai.OpenAI, fake: FakeProvider
) -> None:
    # Responses-style parts (input_text, input_image) are outside the client's types, on purpose.
    messages: Any = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Hi"},
                {"type": "input_image", "image_url": PIXEL},
            ],
        },
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-5-mini",
        messages=messages,
        max_tokens=50,
        temperature=0.5,
        user="user-7",
        extra_body={"not_an_openai_field": True},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "".join(WORDS)
    assert completion.model == "openai/gpt-5-mini"
    assert completion.usage is not None and completion.usage.prompt_tokens == PROMPT_TOKENS
    assert raw.headers["x-crosscompute-routing-profile"] == "explicit"
    assert raw.headers["x-crosscompute-provider"] == "openai"
    assert raw.headers["x-crosscompute-routed-model"] == "openai/gpt-5-mini"
    assert raw.headers["x-crosscompute-price-rule"] == "openai-gpt-5-mini-2026-08"
    assert raw.headers["x-crosscompute-billed-credits"] == str(FAKE_ANSWER_MICRO / 1_000_000)

    upstream = fake.last("/v1/chat/completions")
    assert upstream.headers["authorization"] == "Bearer sk-fake-openai-secret"
    assert upstream.body["model"] == "gpt-5-mini"
    assert upstream.body["max_completion_tokens"] == 50 and "max_tokens" not in upstream.body
    assert upstream.body["messages"][0] == {"role": "developer", "content": "Be brief."}
    assert upstream.body["messages"][1]["content"] == [
        {"type": "text", "text": "Hi"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]
    assert upstream.body["temperature"] == 0.5 and upstream.body["user"] == "user-7"
    assert "not_an_openai_field" not in upstream.body

    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger == 100_000_000 - FAKE_ANSWER_MICRO


def test_models_that_want_system_get_system_and_max_tokens(client: openai.OpenAI, fake: FakeProvider) -> None:
    client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=40,
    )
    upstream = fake.last("/v1/chat/completions")
    assert upstream.body["messages"][0]["role"] == "system"
    assert upstream.body["max_tokens"] == 40 and "max_completion_tokens" not in upstream.body


def test_a_stream_arrives_in_chunks_ends_done_and_bills_like_the_plain_answer(
    providers: Gateway, person: Person, client: openai.OpenAI, fake: FakeProvider
) -> None:
    stream = client.chat.completions.create(
        model="openai/gpt-5-mini",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "".join(WORDS)
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.completion_tokens == COMPLETION_TOKENS
    assert final.model_extra is not None
    assert final.model_extra["crosscompute"]["billed_credits"] == FAKE_ANSWER_MICRO / 1_000_000
    assert fake.last("/v1/chat/completions").body["stream_options"] == {"include_usage": True}
    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger == 100_000_000 - FAKE_ANSWER_MICRO

    # Without include_usage the client gets no usage chunk, and the bill is the same.
    quiet = list(
        client.chat.completions.create(
            model="openai/gpt-5-mini",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=50,
            stream=True,
        )
    )
    assert all(chunk.choices for chunk in quiet)
    assert fake.last("/v1/chat/completions").body["stream_options"] == {"include_usage": True}
    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger == 100_000_000 - 2 * FAKE_ANSWER_MICRO


def test_the_raw_stream_is_real_sse(person: Person, providers: Gateway) -> None:
    secret = person.bootstrap()["apiKey"]
    body = {
        "model": "openai/gpt-5-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 9,
    }
    with httpx.stream(
        "POST",
        f"{providers.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {secret}"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-crosscompute-routed-model"] == "openai/gpt-5-mini"
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"


def test_the_first_chunk_arrives_before_the_provider_finishes(
    person: Person, providers: Gateway, fake: FakeProvider
) -> None:
    fake.release_slow.clear()
    secret = person.bootstrap()["apiKey"]
    body = {
        "model": "openai/gpt-5-mini",
        "messages": [{"role": "user", "content": "[slow]"}],
        "stream": True,
        "max_tokens": 9,
    }
    with httpx.stream(
        "POST",
        f"{providers.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
        fake.release_slow.set()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"


def test_a_cut_stream_ends_with_an_error_event_and_is_billed_once_for_what_was_produced(
    providers: Gateway, person: Person, client: openai.OpenAI
) -> None:
    before = {row["id"] for row in usage_rows(providers)}
    with pytest.raises(openai.APIError) as raised:
        for _ in client.chat.completions.create(
            model="openai/gpt-5-mini",
            messages=[{"role": "user", "content": "[cut]"}],
            max_tokens=50,
            stream=True,
        ):
            pass
    assert "provider" in str(raised.value.message).lower()
    new = [row for row in usage_rows(providers) if row["id"] not in before]
    assert len(new) == 1
    assert new[0]["status"] == "settled"
    assert new[0]["output_tokens"] >= 1 and new[0]["billed_micro"] > 0
    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger == 100_000_000 - new[0]["billed_micro"]


def test_anthropic_translation_both_ways(client: openai.OpenAI, fake: FakeProvider) -> None:
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    completion = client.chat.completions.create(
        model="anthropic/claude-sonnet-4-6",
        messages=[
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather? [tool]"},
                    {"type": "image_url", "image_url": {"url": PIXEL}},
                ],
            },
        ],
        tools=tools,
        tool_choice="required",
        max_tokens=100,
        temperature=1.5,
        stop=["END"],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    calls = choice.message.tool_calls or []
    assert [(call.function.name, json.loads(call.function.arguments)) for call in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]
    assert completion.usage is not None and completion.usage.prompt_tokens == PROMPT_TOKENS

    upstream = fake.last("/v1/messages")
    assert upstream.headers["x-api-key"] == "sk-ant-fake-secret"
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert upstream.body["model"] == "claude-sonnet-4-6"
    assert upstream.body["system"] == "You are terse."
    assert upstream.body["max_tokens"] == 100
    assert upstream.body["temperature"] == 1.0, "Anthropic's range is 0..1"
    assert upstream.body["stop_sequences"] == ["END"]
    assert upstream.body["tool_choice"] == {"type": "any"}
    assert upstream.body["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    image = upstream.body["messages"][0]["content"][1]
    assert image["type"] == "image" and image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/png"

    # The tool results go back as one user turn with two tool_result blocks.
    client.chat.completions.create(
        model="anthropic/claude-sonnet-4-6",
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},  # type: ignore[misc]
            {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "Rain"},
        ],
        tools=tools,
        parallel_tool_calls=False,
        max_tokens=100,
    )
    turns = fake.last("/v1/messages").body["messages"]
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
    assert [block["type"] for block in turns[1]["content"]] == ["tool_use", "tool_use"]
    assert turns[1]["content"][0]["input"] == {"city": "Paris"}
    assert [(block["type"], block["content"]) for block in turns[2]["content"]] == [
        ("tool_result", "Sunny"),
        ("tool_result", "Rain"),
    ]
    assert fake.last("/v1/messages").body["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }


def test_an_anthropic_stream_becomes_openai_chunks(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="anthropic/claude-haiku-4-5",
            messages=[{"role": "user", "content": "Weather? [tool]"}],
            tools=[
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
            ],
            max_tokens=100,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Let me check."
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if call.function and call.function.name:
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (
                (call.function.arguments or "") if call.function else ""
            )
    assert names == {0: "get_weather", 1: "get_weather"}
    assert [json.loads(arguments[i]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )


@pytest.mark.parametrize(
    ("status", "exception", "our_status"),
    [
        (400, openai.BadRequestError, 400),
        (401, openai.InternalServerError, 502),
        (429, openai.InternalServerError, 503),
        (500, openai.InternalServerError, 502),
    ],
)
def test_provider_errors_map_to_ours_and_bill_nothing(
    providers: Gateway,
    person: Person,
    client: openai.OpenAI,
    status: int,
    exception: type[openai.APIStatusError],
    our_status: int,
) -> None:
    for stream in (False, True):
        messages: Any = [{"role": "user", "content": f"[error {status}]"}]
        with pytest.raises(exception) as raised:
            client.chat.completions.create(
                model="openai/gpt-5-mini", messages=messages, max_tokens=9, stream=stream
            )
        assert raised.value.status_code == our_status
        assert "sk-fake" not in raised.value.message and "127.0.0.1" not in raised.value.message
        if status == 400:
            assert "fake provider says 400" in raised.value.message
    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger == 100_000_000


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "openai/gpt-5-mini"}, "messages"),
        ({"model": "openai/gpt-5-mini", "messages": []}, "messages"),
        (
            {"model": "openai/gpt-5-mini", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "x"}], "temperature": 5},
            "temperature",
        ),
        (
            {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        (
            {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "x"}], "top_p": "high"},
            "top_p",
        ),
        (
            {
                "model": "deepseek-reasoner",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "tools",
        ),
        (
            {
                "model": "deepseek-chat",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PIXEL}}]}
                ],
            },
            "messages",
        ),
        # Any JSON value may arrive where a string is expected: never a 500.
        (
            {"model": "openai/gpt-5-mini", "messages": [{"role": ["user"], "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": [{"type": {"a": 1}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "model": "openai/gpt-5-mini",
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"x": 1},
            },
            "tool_choice",
        ),
        (
            {
                "model": "openai/gpt-5-mini",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": []},
            },
            "response_format",
        ),
        ({"model": ["openai/gpt-5-mini"], "messages": [{"role": "user", "content": "x"}]}, "model"),
    ],
)
def test_bad_requests_are_400_with_param_and_bill_nothing(
    providers: Gateway, person: Person, body: dict[str, Any], param: str
) -> None:
    secret = person.bootstrap()["apiKey"]
    response = httpx.post(
        f"{providers.base_url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"
    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger == 100_000_000


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"model": "a", "model": "b", "messages": []}', b"\xff\xfe", b"[1, 2]"]
)
def test_unparseable_bodies_are_400(person: Person, providers: Gateway, raw: bytes) -> None:
    secret = person.bootstrap()["apiKey"]
    response = httpx.post(
        f"{providers.base_url}/v1/chat/completions",
        content=raw,
        headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_models_and_keys_raise_the_matching_exceptions(
    client: openai.OpenAI, providers: Gateway
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="openai/gpt-7-ultra", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.code == "model_not_found"
    with (
        openai.OpenAI(
            base_url=f"{providers.base_url}/v1", api_key="cc_live_" + "x" * 43, max_retries=0
        ) as stranger,
        pytest.raises(openai.AuthenticationError),
    ):
        stranger.chat.completions.create(
            model="openai/gpt-5-mini", messages=[{"role": "user", "content": "x"}]
        )


def test_fifty_concurrent_requests_against_a_quota_for_ten(providers: Gateway, person: Person) -> None:
    person.bootstrap()
    quota_micro = 10 * FAKE_ANSWER_MICRO
    created = person.post(
        "/api/keys", {"label": "ten answers", "quotaCredits": quota_micro / 1_000_000}
    ).json()
    client = person.openai(created["apiKey"])

    def ask(_: int) -> str:
        try:
            client.chat.completions.create(
                model="openai/gpt-5-mini",
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=COMPLETION_TOKENS,
            )
        except openai.APIStatusError as error:
            return f"{error.status_code} {error.code}"
        return "answered"

    with client, ThreadPoolExecutor(16) as pool:  # the client's connections close with it
        outcomes = list(pool.map(ask, range(50)))
    assert 1 <= outcomes.count("answered") <= 10
    assert outcomes.count("answered") + outcomes.count("402 insufficient_credits") == 50, outcomes
    key = query(
        providers.settings,
        "SELECT id, used_micro, quota_micro FROM api_keys WHERE id = :id",
        id=created["key"]["id"],
    )[0]
    billed = query(
        providers.settings,
        "SELECT COALESCE(SUM(billed_micro), 0) AS billed, COUNT(*) AS calls FROM usage_records "
        "WHERE key_id = :id AND status = 'settled'",
        id=key["id"],
    )[0]
    assert int(billed["billed"]) == key["used_micro"] <= key["quota_micro"]
    assert int(billed["calls"]) == outcomes.count("answered")
    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger >= 0


def test_a_deactivated_key_cannot_chat(person: Person, providers: Gateway) -> None:
    boot = person.bootstrap()
    client = person.openai(boot["apiKey"])
    client.chat.completions.create(
        model="openai/gpt-5-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    person.post(f"/api/keys/{boot['key']['id']}/deactivate")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="openai/gpt-5-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )


def test_an_exhausted_balance_is_402_in_openai_shape(person: Person, providers: Gateway) -> None:
    person.bootstrap()
    client = person.openai(
        person.post("/api/keys", {"label": "tiny", "quotaCredits": 0.000001}).json()["apiKey"]
    )
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model="openai/gpt-5-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.status_code == 402
    assert raised.value.code == "insufficient_credits"
    assert raised.value.body == {
        "message": raised.value.body["message"],  # type: ignore[index]
        "type": "insufficient_quota",
        "code": "insufficient_credits",
        "param": None,
    }


def test_the_catalog_lists_configured_providers_with_prices(
    client: openai.OpenAI, providers: Gateway
) -> None:
    raw = client.models.with_raw_response.list()
    models = {model.id: model for model in raw.parse().data}
    assert raw.headers["x-crosscompute-model-count"] == str(len(models))
    assert {"openai/gpt-5-mini", "anthropic/claude-sonnet-4-6", "deepseek-chat", "ollama/llama3.2"} <= set(
        models
    )
    assert {"auto", "cheap", "medium", "premium"} <= set(models)
    assert "google/gemini-2.5-flash" not in models, "Gemini has no key here"
    assert "crosscompute/simulator" not in models, "real providers are configured: no simulator"
    extra = models["openai/gpt-5-mini"].model_extra or {}
    assert extra["pricing"] == {
        "prompt": "250",
        "completion": "2000",
        "input_cache_read": "25",
        "rule": "openai-gpt-5-mini-2026-08",
    }
    assert extra["context_length"] == 400000
    assert extra["capabilities"] == {"tools": True, "vision": True, "reasoning": True}
    assert models["openai/gpt-5-mini"].owned_by == "openai"
    retrieved = client.models.retrieve("openai/gpt-5-mini")  # the client sends openai%2Fgpt-5-mini
    assert retrieved.id == "openai/gpt-5-mini"


def test_a_self_hosted_server_needs_no_key(client: openai.OpenAI, fake: FakeProvider) -> None:
    answer = client.chat.completions.create(
        model="ollama/llama3.2", messages=[{"role": "user", "content": "Hi"}], max_tokens=20
    )
    assert answer.choices[0].message.content == "".join(WORDS)
    upstream = fake.last("/v1/chat/completions")
    assert upstream.body["model"] == "llama3.2"
    assert "authorization" not in upstream.headers


def test_a_client_that_disconnects_cancels_upstream_and_is_billed_once(
    providers: Gateway, person: Person, fake: FakeProvider
) -> None:
    fake.release_slow.clear()
    secret = person.bootstrap()["apiKey"]
    before = {row["id"] for row in usage_rows(providers)}
    disconnects = fake.disconnects
    body = {
        "model": "openai/gpt-5-mini",
        "messages": [{"role": "user", "content": "[slow]"}],
        "stream": True,
        "max_tokens": 9,
    }
    with httpx.stream(
        "POST",
        f"{providers.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {secret}"},
    ) as response:
        next(line for line in response.iter_lines() if line)
    # The client is gone. The gateway bills what it delivered and drops the upstream connection.
    settled = eventually(
        lambda: [
            row for row in usage_rows(providers) if row["id"] not in before and row["status"] == "settled"
        ],
        what="the disconnected call to be settled",
    )
    assert len(settled) == 1
    fake.release_slow.set()
    eventually(lambda: fake.disconnects > disconnects, what="the provider to see the connection closed")
    balance, ledger = balance_and_ledger(providers, person)
    assert balance == ledger == 100_000_000 - settled[0]["billed_micro"]


def test_a_provider_that_hangs_is_504_and_bills_nothing(
    database_url: str, supabase: SupabaseStandIn, fake: FakeProvider
) -> None:
    fake.release_slow.clear()
    settings = gateway_settings(
        database_url,
        supabase,
        OPENAI_API_KEY="sk-fake-openai-secret",
        OPENAI_BASE_URL=f"{fake.url}/v1",
        CROSSCOMPUTE_UPSTREAM_TIMEOUT_SECONDS="1",
    )
    try:
        with (
            running_gateway(settings) as gateway,
            httpx.Client(base_url=gateway.base_url, timeout=30) as http,
        ):
            person = sign_in(gateway, supabase, http)
            client = person.openai(person.bootstrap()["apiKey"])
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(
                    model="openai/gpt-5-mini", messages=[{"role": "user", "content": "[hang]"}], max_tokens=9
                )
            assert raised.value.status_code == 504
            assert raised.value.code == "provider_timeout"
            balance, ledger = balance_and_ledger(gateway, person)
            assert balance == ledger == 100_000_000
    finally:
        fake.release_slow.set()


def test_openai_tool_calls_pass_through_both_ways(client: openai.OpenAI, fake: FakeProvider) -> None:
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    answer = client.chat.completions.create(
        model="openai/gpt-5-mini",
        messages=[{"role": "user", "content": "Weather? [tool]"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=True,
        response_format={"type": "text"},
        seed=7,
        max_tokens=30,
    )
    assert answer.choices[0].finish_reason == "tool_calls"
    calls = answer.choices[0].message.tool_calls or []
    assert [json.loads(call.function.arguments) for call in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]  # type: ignore[union-attr]
    upstream = fake.last("/v1/chat/completions").body
    assert upstream["tools"] == tools
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (upstream["parallel_tool_calls"], upstream["seed"], upstream["response_format"]) == (
        True,
        7,
        {"type": "text"},
    )
