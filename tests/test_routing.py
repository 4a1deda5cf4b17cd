"""Routing profiles auto/cheap/medium/premium through the
real Envoy with capability filters, fallbacks, cool-downs and NotDiamond (local stand-ins)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from server.domain.catalog import DEFAULT_CATALOG, load_catalog_file
from server.domain.chat.billing import bill
from server.domain.credits import micro_to_credits
from server.domain.providers.base import Usage
from server.domain.routing.complexity import VERSION
from tests.conftest import gateway_settings
from tests.support.cooldowns import forget_cooldowns
from tests.support.db import query
from tests.support.fake_provider import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    WORDS,
    FakeProvider,
    provider_settings,
)
from tests.support.gateway import Gateway, running_gateway
from tests.support.notdiamond import NotDiamondStandIn
from tests.support.people import Person, sign_in
from tests.support.supabase import SupabaseStandIn

PRICE_CLASS = {model.id: model.price_class for model in load_catalog_file(DEFAULT_CATALOG).models}
PROOF = "Prove that there are infinitely many primes."
PIXEL = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(scope="module")
def notdiamond() -> Iterator[NotDiamondStandIn]:
    with NotDiamondStandIn().running() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def routed(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider) -> Iterator[Gateway]:
    with running_gateway(gateway_settings(database_url, supabase, **provider_settings(fake))) as running:
        yield running


@pytest.fixture
def person(routed: Gateway, supabase: SupabaseStandIn) -> Iterator[Person]:
    with httpx.Client(base_url=routed.base_url, timeout=30) as http:
        yield sign_in(routed, supabase, http)


@pytest.fixture
def client(person: Person) -> Iterator[openai.OpenAI]:
    # Closed after each test: a pool of sockets left to the garbage collector warns (an error here)
    # in whichever later test the collection happens to run.
    with person.openai(person.bootstrap()["apiKey"]) as opened:
        yield opened


def ask(client: openai.OpenAI, model: str, content: Any, **options: Any) -> Any:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=20, **options
    )
    raw.parse()
    return raw.headers


def test_auto_sends_a_greeting_and_a_proof_to_different_tiers_and_models(client: openai.OpenAI) -> None:
    greeting = ask(client, "auto", "hi!")
    proof = ask(client, "auto", PROOF)
    assert (greeting["x-crosscompute-routing-tier"], proof["x-crosscompute-routing-tier"]) == (
        "SIMPLE",
        "REASONING",
    )
    assert (greeting["x-crosscompute-routing-budget"], proof["x-crosscompute-routing-budget"]) == (
        "cheap",
        "premium",
    )
    assert greeting["x-crosscompute-routed-model"] != proof["x-crosscompute-routed-model"]
    for headers in (greeting, proof):
        assert headers["x-crosscompute-routing-profile"] == "auto"
        assert headers["x-crosscompute-routing-version"] == VERSION
        assert headers["x-crosscompute-routing-intelligence"] == "local"
        assert headers["x-crosscompute-provider"] and headers["x-crosscompute-price-rule"]
        assert float(headers["x-crosscompute-billed-credits"]) > 0


@pytest.mark.parametrize(
    "content",
    ["hi", PROOF, "Design a multi-region architecture with caching, sharding and failover, in detail."],
)
def test_cheap_never_picks_a_premium_or_medium_model(client: openai.OpenAI, content: str) -> None:
    headers = ask(client, "eco", content)
    assert headers["x-crosscompute-routing-budget"] == "cheap"
    assert PRICE_CLASS[headers["x-crosscompute-routed-model"]] == "cheap"


def test_tools_images_and_long_prompts_only_reach_models_that_can_take_them(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    # medium/REASONING starts with deepseek-reasoner, which takes no tools.
    assert ask(client, "medium", PROOF)["x-crosscompute-routed-model"] == "deepseek-reasoner"
    with_tools = ask(client, "medium", PROOF, tools=tools)
    assert with_tools["x-crosscompute-routed-model"] != "deepseek-reasoner"
    # cheap/MEDIUM prefers deepseek-chat, which sees no images.
    image: Any = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]
    seen = ask(client, "cheap", image)
    assert seen["x-crosscompute-routed-model"] == "openai/gpt-4.1-mini"
    # 150k tokens fit neither deepseek-chat (128k) nor most windows: only GPT-4.1 mini's million.
    long = ask(client, "cheap", "lorem " * 150_000 + "\nWhat is the first word?")
    assert long["x-crosscompute-routed-model"] == "openai/gpt-4.1-mini"


def usage_for(gateway: Gateway, person: Person) -> list[dict[str, Any]]:
    return query(
        gateway.settings,
        "SELECT u.model, u.status, u.billed_micro, u.routing_tier FROM usage_records u JOIN accounts a ON "
        "a.id = u.account_id WHERE a.external_id = :sub ORDER BY u.created_at",
        sub=person.user_id,
    )


FIRST, ANSWER = "openai/gpt-5-mini", "anthropic/claude-haiku-4-5"  # medium/MEDIUM's first two


def upstream_models(fake: FakeProvider, since: int) -> list[str]:
    """The upstream model of each provider call the fake received after the first `since`."""
    return [str(item.body.get("model")) for item in fake.received[since:]]


@pytest.mark.parametrize("failure", ["500", "429", "529", "hang", "close"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_failing_first_candidate_falls_back_and_only_the_answer_is_billed(
    routed: Gateway, person: Person, client: openai.OpenAI, fake: FakeProvider, failure: str, stream: bool
) -> None:
    # Every case shares the database and the server: an earlier case's cool-down would send this
    # one straight to the second candidate, and no fallback would happen at all.
    forget_cooldowns(routed, FIRST, ANSWER)
    fake.failures["gpt-5-mini"] = failure
    fake.release_slow.clear()
    since = len(fake.received)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="medium",
            messages=[{"role": "user", "content": "Explain how a refrigerator works, in a paragraph."}],
            max_tokens=20,
            stream=stream,
        )
        parsed = raw.parse()
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)  # type: ignore[union-attr]
        else:
            text = parsed.choices[0].message.content or ""  # type: ignore[union-attr]
        assert text == "".join(WORDS), "the fallback's answer reached the caller"
        assert raw.headers["x-crosscompute-routing-tier"] == "MEDIUM"
        assert raw.headers["x-crosscompute-routed-model"] == ANSWER
    finally:
        fake.failures.clear()
        fake.release_slow.set()
    assert upstream_models(fake, since) == ["gpt-5-mini", "claude-haiku-4-5"], (
        "this very request tried the failing first candidate, then fell back"
    )
    spec = next(m for m in load_catalog_file(routed.settings.catalog_file).models if m.id == ANSWER)
    answer_cost = bill(spec, routed.settings.credits_per_usd_decimal, Usage(PROMPT_TOKENS, COMPLETION_TOKENS))
    records = usage_for(routed, person)
    assert len(records) == 1, "one usage record per request"
    assert records[0]["model"] == ANSWER and records[0]["status"] == "settled"
    assert records[0]["billed_micro"] == answer_cost > 0, "billed for the answer's tokens at its price"
    if not stream:
        assert (
            raw.headers["x-crosscompute-billed-credits"] == f"{micro_to_credits(answer_cost).normalize():f}"
        )
    (account,) = query(
        routed.settings,
        "SELECT a.balance_micro, a.used_micro FROM accounts a WHERE a.external_id = :sub",
        sub=person.user_id,
    )
    assert (account["used_micro"], routed.settings.signup_micro - account["balance_micro"]) == (
        answer_cost,
        answer_cost,
    ), "the failed attempt cost nothing"


def test_a_429_cools_the_model_down_for_the_next_requests(
    routed: Gateway, client: openai.OpenAI, fake: FakeProvider
) -> None:
    fake.failures["gpt-5"] = (
        "429"  # premium/MEDIUM: claude-sonnet first, then gpt-5; premium/REASONING: gpt-5 first
    )
    try:
        assert ask(client, "premium", PROOF)["x-crosscompute-routed-model"] == "anthropic/claude-sonnet-4-6"
        calls = sum(1 for item in fake.received if item.body.get("model") == "gpt-5")
        assert ask(client, "premium", PROOF)["x-crosscompute-routed-model"] == "anthropic/claude-sonnet-4-6"
        assert sum(1 for item in fake.received if item.body.get("model") == "gpt-5") == calls, (
            "gpt-5 is resting"
        )
    finally:
        fake.failures.clear()
    resting = query(
        routed.settings, "SELECT model_id, reason FROM model_cooldowns WHERE model_id = 'openai/gpt-5'"
    )
    assert resting == [{"model_id": "openai/gpt-5", "reason": "rate_limited"}]


def test_a_provider_400_does_not_fall_back(client: openai.OpenAI, fake: FakeProvider) -> None:
    fake.failures["gpt-4.1-mini"] = "400"
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, "openai/gpt-4.1-mini", "Hi", extra_body={"models": ["deepseek-chat"]})
    finally:
        fake.failures.clear()
    assert "fake provider says 400" in refused.value.message


def test_an_explicit_model_may_name_its_own_fallbacks(client: openai.OpenAI, fake: FakeProvider) -> None:
    fake.failures["gpt-5-mini"] = "500"
    try:
        headers = ask(client, "openai/gpt-5-mini", "Hi", extra_body={"models": ["deepseek-chat"]})
    finally:
        fake.failures.clear()
    assert headers["x-crosscompute-routing-profile"] == "explicit"
    assert headers["x-crosscompute-routed-model"] == "deepseek-chat"


@pytest.fixture(scope="module")
def advised(
    tmp_path_factory: pytest.TempPathFactory,
    supabase: SupabaseStandIn,
    fake: FakeProvider,
    notdiamond: NotDiamondStandIn,
) -> Iterator[Gateway]:
    database = f"sqlite:///{tmp_path_factory.mktemp('notdiamond') / 'db.sqlite3'}"
    settings = gateway_settings(
        database,
        supabase,
        **provider_settings(fake),
        NOTDIAMOND_API_KEY="nd-secret-key",
        NOTDIAMOND_BASE_URL=notdiamond.url,
        NOTDIAMOND_TIMEOUT_MS="300",
    )
    with running_gateway(settings) as running:
        yield running


def advised_client(gateway: Gateway, supabase: SupabaseStandIn, http: httpx.Client) -> openai.OpenAI:
    person = sign_in(gateway, supabase, http)
    return person.openai(person.bootstrap()["apiKey"])


def test_notdiamond_is_followed_when_it_answers_in_time(
    advised: Gateway, supabase: SupabaseStandIn, notdiamond: NotDiamondStandIn
) -> None:
    notdiamond.choice, notdiamond.delay_seconds, notdiamond.failing = (
        ("anthropic", "claude-haiku-4-5"),
        0.0,
        False,
    )
    with (
        httpx.Client(base_url=advised.base_url, timeout=30) as http,
        advised_client(advised, supabase, http) as advised_openai,
    ):
        headers = ask(advised_openai, "medium", "Explain how a refrigerator works.")
    assert headers["x-crosscompute-routing-intelligence"] == "notdiamond"
    assert headers["x-crosscompute-routing-intelligence-session"] == "nd-session-42"
    assert headers["x-crosscompute-routing-intelligence-request-id"] == "nd-request-7"
    assert headers["x-crosscompute-routed-model"] == "anthropic/claude-haiku-4-5"
    request = notdiamond.received[-1]
    assert request["path"] == "/v2/modelRouter/modelSelect" and request["auth"] == "Bearer nd-secret-key"
    assert {"provider": "openai", "model": "gpt-5-mini"} in request["body"]["llm_providers"]


@pytest.mark.parametrize("trouble", ["slow", "down", "stranger"])
def test_notdiamond_trouble_falls_back_to_the_local_decision(
    advised: Gateway, supabase: SupabaseStandIn, notdiamond: NotDiamondStandIn, trouble: str
) -> None:
    notdiamond.choice = ("mystery", "model-x") if trouble == "stranger" else ("anthropic", "claude-haiku-4-5")
    notdiamond.delay_seconds = 1.0 if trouble == "slow" else 0.0
    notdiamond.failing = trouble == "down"
    try:
        with (
            httpx.Client(base_url=advised.base_url, timeout=30) as http,
            advised_client(advised, supabase, http) as advised_openai,
        ):
            headers = ask(advised_openai, "medium", "Explain how a refrigerator works.")
    finally:
        notdiamond.delay_seconds, notdiamond.failing = 0.0, False
    assert headers["x-crosscompute-routing-intelligence"] == "local"
    assert headers["x-crosscompute-routed-model"] == "openai/gpt-5-mini", "the local first choice"
    assert "x-crosscompute-routing-intelligence-session" not in headers


def test_metrics_count_routing_fallbacks_cooldowns_tokens_and_credits(
    client: openai.OpenAI, fake: FakeProvider
) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "routing": sample(
            "crosscompute_routing_decisions_total",
            profile="cheap",
            tier="SIMPLE",
            budget="cheap",
            intelligence="local",
        ),
        "fallback": sample("crosscompute_fallbacks_total", model="deepseek-chat"),
        "cooldown": sample("crosscompute_cooldowns_total", model="deepseek-chat", reason="rate_limited"),
        "error": sample("crosscompute_upstream_errors_total", provider="deepseek", kind="rate_limited"),
        "tokens": sample("crosscompute_tokens_total", model="openai/gpt-4.1-mini", direction="output"),
        "credits": sample("crosscompute_billed_micro_credits_total", model="openai/gpt-4.1-mini"),
    }
    fake.failures["deepseek-chat"] = "429"  # cheap/SIMPLE: deepseek-chat, then (no Gemini here) gpt-4.1-mini
    try:
        headers = ask(client, "cheap", "hi")
    finally:
        fake.failures.clear()
    assert headers["x-crosscompute-routed-model"] == "openai/gpt-4.1-mini"
    assert (
        sample(
            "crosscompute_routing_decisions_total",
            profile="cheap",
            tier="SIMPLE",
            budget="cheap",
            intelligence="local",
        )
        == before["routing"] + 1
    )
    assert sample("crosscompute_fallbacks_total", model="deepseek-chat") == before["fallback"] + 1
    assert (
        sample("crosscompute_cooldowns_total", model="deepseek-chat", reason="rate_limited")
        == before["cooldown"] + 1
    )
    assert (
        sample("crosscompute_upstream_errors_total", provider="deepseek", kind="rate_limited")
        == before["error"] + 1
    )
    assert (
        sample("crosscompute_tokens_total", model="openai/gpt-4.1-mini", direction="output")
        == before["tokens"] + 5
    )
    assert sample("crosscompute_billed_micro_credits_total", model="openai/gpt-4.1-mini") > before["credits"]
    assert (
        REGISTRY.get_sample_value(
            "crosscompute_requests_total",
            {"method": "/crosscompute.v1.InferenceService/CreateChatCompletion", "code": "OK"},
        )
        or 0
    ) >= 1
