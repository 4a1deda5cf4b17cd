"""Bills that count what was sent, through the real Envoy with the `openai` client on SQLite and
PostgreSQL: a 40k-token `response_format` schema is held and billed at the provider's count, and usage
a provider reports beyond the hold is billed as far as the key can pay, the rest stored and counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from server.domain.catalog import ModelSpec, load_catalog_file
from server.domain.chat.billing import bill
from server.domain.chat.tokens import count_text
from server.domain.credits import micro_to_credits
from server.domain.providers.base import Usage
from server.settings import Settings
from tests.conftest import gateway_settings
from tests.support.fake_provider import COMPLETION_TOKENS, FakeProvider
from tests.support.gateway import Gateway, running_gateway
from tests.support.money import KeyBooks
from tests.support.people import Person, sign_in
from tests.support.supabase import SupabaseStandIn

SCHEMA_TOKENS = 40_000


@pytest.fixture(scope="module")
def gateway(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider) -> Iterator[Gateway]:
    settings = gateway_settings(
        database_url,
        supabase,
        OPENAI_API_KEY="sk-fake-openai",
        OPENAI_BASE_URL=f"{fake.url}/v1",
        CROSSCOMPUTE_UPSTREAM_TIMEOUT_SECONDS="20",
    )
    with running_gateway(settings) as running:
        yield running


@pytest.fixture
def person(gateway: Gateway, supabase: SupabaseStandIn) -> Iterator[Person]:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        yield sign_in(gateway, supabase, client)


def spec_of(settings: Settings, model: str) -> ModelSpec:
    return next(spec for spec in load_catalog_file(settings.catalog_file).models if spec.id == model)


def big_schema() -> dict[str, Any]:
    """A JSON schema of at least SCHEMA_TOKENS cl100k tokens."""
    properties: dict[str, Any] = {}
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    while count_text(json.dumps(schema, separators=(",", ":"))) < SCHEMA_TOKENS:
        for n in range(len(properties), len(properties) + 200):
            properties[f"field_{n}"] = {
                "type": "string",
                "description": f"The {n}th value the caller wants filled in, described at some length.",
            }
    schema["required"] = list(properties)
    return schema


def unbilled_metric(model: str) -> float:
    value = REGISTRY.get_sample_value("crosscompute_unbilled_micro_credits_total", {"model": model})
    return value or 0.0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_40k_token_response_format_is_held_and_billed_at_the_providers_count(
    gateway: Gateway, person: Person, stream: bool
) -> None:
    boot = person.bootstrap()
    books = KeyBooks(gateway.settings, boot["key"]["id"])
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "form", "schema": big_schema()}}
    with person.openai(boot["apiKey"]) as client:
        arguments: dict[str, Any] = {
            "model": "openai/gpt-5",
            "messages": [{"role": "user", "content": "Fill in the form. [count]"}],
            "max_tokens": 1,
            "response_format": response_format,
        }
        if stream:
            chunks = list(
                client.chat.completions.create(
                    **arguments, stream=True, stream_options={"include_usage": True}
                )
            )
            reported = chunks[-1].usage
            shown = (chunks[-1].model_extra or {})["crosscompute"]["billed_credits"]
        else:
            raw = client.chat.completions.with_raw_response.create(**arguments)
            reported = raw.parse().usage
            shown = float(raw.headers["x-crosscompute-billed-credits"])
    assert reported is not None
    assert reported.prompt_tokens > SCHEMA_TOKENS, "the provider counted the schema as prompt"
    assert reported.completion_tokens == 1, "and answered within max_tokens"
    price = bill(
        spec_of(gateway.settings, "openai/gpt-5"),
        gateway.settings.credits_per_usd_decimal,
        Usage(reported.prompt_tokens, reported.completion_tokens),
    )
    assert price > 31_000_000, "over 31 credits: the schema alone is not cheap"
    assert shown == float(micro_to_credits(price)), "the caller sees the bill at catalog prices"
    (record,) = books.records()
    assert record.reserved_micro >= record.billed_micro == price, "the hold covered it; the bill is exact"
    assert (record.status, record.unbilled_micro, record.input_tokens) == (
        "settled",
        0,
        reported.prompt_tokens,
    )
    signup = gateway.settings.signup_micro
    assert books.balance_and_ledger() == (signup - price, signup - price)
    assert books.key_used() == price


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_usage_beyond_the_hold_is_billed_up_to_the_quota_and_the_rest_is_counted(
    gateway: Gateway, person: Person, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    person.bootstrap()
    created = person.post("/api/keys", {"label": "one credit", "quotaCredits": 1}).json()
    books = KeyBooks(gateway.settings, created["key"]["id"])
    model = "openai/gpt-5-mini"
    cost = bill(
        spec_of(gateway.settings, model),
        gateway.settings.credits_per_usd_decimal,
        Usage(1_000_000, COMPLETION_TOKENS),
    )
    unbilled_before = unbilled_metric(model)
    arguments: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Hi [prompt 1000000]"}],
        "max_tokens": 10,
    }
    with caplog.at_level(logging.WARNING), person.openai(created["apiKey"]) as client:
        if stream:
            chunks = list(
                client.chat.completions.create(
                    **arguments, stream=True, stream_options={"include_usage": True}
                )
            )
            shown = (chunks[-1].model_extra or {})["crosscompute"]["billed_credits"]
        else:
            raw = client.chat.completions.with_raw_response.create(**arguments)
            shown = float(raw.headers["x-crosscompute-billed-credits"])
    assert shown == 1.0, "billed what the key's one-credit quota could still pay"
    (record,) = books.records()
    assert (record.status, record.billed_micro, record.unbilled_micro) == (
        "settled",
        1_000_000,
        cost - 1_000_000,
    )
    assert record.reserved_micro < 1_000_000, "far beyond what was held"
    assert books.key_used() == 1_000_000, "the quota is used up, not exceeded"
    signup = gateway.settings.signup_micro
    assert books.balance_and_ledger() == (signup - 1_000_000, signup - 1_000_000)
    assert unbilled_metric(model) - unbilled_before == cost - 1_000_000, "counted in the metric"
    assert any(
        record.id in entry.getMessage() and str(cost - 1_000_000) in entry.getMessage()
        for entry in caplog.records
        if entry.levelno == logging.WARNING
    ), "a warning names the call and what went unbilled"
