"""Faults: a storm of provider failures, the database going away under a running gateway, and Envoy
restarting in front of a server that keeps its state."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from server.settings import Settings
from tests.conftest import gateway_settings
from tests.support.databases import postgres_database, set_connections_allowed
from tests.support.db import query
from tests.support.fake_provider import FakeProvider
from tests.support.gateway import envoy_for, running_gateway
from tests.support.people import sign_in
from tests.support.supabase import SupabaseStandIn
from tests.support.waiting import eventually


def providers(fake: FakeProvider) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-fake",
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        "ANTHROPIC_API_KEY": "sk-ant-fake",
        "ANTHROPIC_BASE_URL": fake.url,
        "DEEPSEEK_API_KEY": "sk-fake",
        "DEEPSEEK_BASE_URL": f"{fake.url}/v1",
    }


def balance_and_ledger(settings: Settings, user_id: str) -> tuple[int, int]:
    sql = "SELECT id, balance_micro FROM accounts WHERE external_id = :sub"
    account = query(settings, sql, sub=user_id)[0]
    total = query(
        settings,
        "SELECT COALESCE(SUM(amount_micro), 0) AS total FROM ledger_entries WHERE account_id = :id",
        id=account["id"],
    )[0]["total"]
    return int(account["balance_micro"]), int(total)


def usage_records(settings: Settings, user_id: str) -> list[dict[str, Any]]:
    """The account's usage records, oldest first."""
    return query(
        settings,
        "SELECT u.id, u.status, u.billed_micro, u.reserved_micro FROM usage_records u "
        "JOIN accounts a ON a.id = u.account_id WHERE a.external_id = :sub ORDER BY u.created_at",
        sub=user_id,
    )


def test_a_storm_of_provider_failures_falls_back_then_answers_503_and_rests_the_models(
    tmp_path_factory: pytest.TempPathFactory, supabase: SupabaseStandIn, fake: FakeProvider
) -> None:
    database = f"sqlite:///{tmp_path_factory.mktemp('storm') / 'db.sqlite3'}"
    with (
        running_gateway(gateway_settings(database, supabase, **providers(fake))) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        person = sign_in(gateway, supabase, http)
        client = person.openai(person.bootstrap()["apiKey"])
        fake.failures.update({"gpt-5-mini": "500", "claude-haiku-4-5": "502", "deepseek-chat": "503"})
        try:
            with pytest.raises(openai.InternalServerError) as raised:
                client.chat.completions.create(
                    model="medium",
                    messages=[
                        {"role": "user", "content": "Explain how a refrigerator works, in a paragraph."}
                    ],
                    max_tokens=20,
                )
        finally:
            fake.failures.clear()
        assert raised.value.status_code == 503
        assert raised.value.code == "all_providers_failed"
        assert balance_and_ledger(gateway.settings, person.user_id) == (100_000_000, 100_000_000)
        resting = {row["model_id"] for row in query(gateway.settings, "SELECT model_id FROM model_cooldowns")}
        assert resting == {"openai/gpt-5-mini", "anthropic/claude-haiku-4-5", "deepseek-chat"}


@pytest.mark.postgres
def test_the_database_going_away_is_503_and_the_gateway_recovers_by_itself(
    supabase: SupabaseStandIn, fake: FakeProvider
) -> None:
    with (
        postgres_database("outage") as (name, url),
        running_gateway(gateway_settings(url, supabase, **providers(fake))) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        person = sign_in(gateway, supabase, http)
        client = person.openai(person.bootstrap()["apiKey"])
        ask = {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
        client.chat.completions.create(**ask)  # type: ignore[call-overload]
        before = balance_and_ledger(gateway.settings, person.user_id)
        assert before[0] == before[1]
        earlier = {row["id"] for row in usage_records(gateway.settings, person.user_id)}

        set_connections_allowed(name, False)
        try:
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(**ask)  # type: ignore[call-overload]
            assert raised.value.status_code == 503
            assert raised.value.code == "database_unavailable"
            assert http.get("/health").status_code == 503
        finally:
            set_connections_allowed(name, True)

        eventually(lambda: http.get("/health").status_code == 200, what="the database to come back")
        client.chat.completions.create(**ask)  # type: ignore[call-overload]
        balance, ledger = balance_and_ledger(gateway.settings, person.user_id)
        assert balance == ledger
        records = usage_records(gateway.settings, person.user_id)
        assert [row for row in records if row["status"] == "reserved"] == [], "no hold left open"
        (after,) = [row for row in records if row["id"] not in earlier]  # the outage left no record
        assert after["status"] == "settled" and after["billed_micro"] > 0
        assert before[0] - balance == after["billed_micro"], "nothing lost or doubled"
        settled = query(gateway.settings, "SELECT COUNT(*) AS n FROM usage_records WHERE status = 'settled'")[
            0
        ]["n"]
        assert settled == 2


def test_envoy_restarts_in_front_of_a_server_that_keeps_its_state(
    tmp_path_factory: pytest.TempPathFactory, supabase: SupabaseStandIn
) -> None:
    database = f"sqlite:///{tmp_path_factory.mktemp('restart') / 'db.sqlite3'}"
    with running_gateway(gateway_settings(database, supabase)) as gateway:
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
            person = sign_in(gateway, supabase, http)
            secret = person.bootstrap()["apiKey"]
        gateway.envoy.stop()
        assert gateway.server.runtime is not None
        replacement = envoy_for(gateway.server.runtime.port, gateway.settings)
        try:
            ports = replacement.start()
            with openai.OpenAI(
                base_url=f"http://127.0.0.1:{ports.http}/v1", api_key=secret, max_retries=0
            ) as client:
                answer = client.chat.completions.create(
                    model="crosscompute/simulator", messages=[{"role": "user", "content": "still there?"}]
                )
            assert "not a real model" in (answer.choices[0].message.content or "")
            me = httpx.get(
                f"http://127.0.0.1:{ports.http}/api/me", headers={"authorization": f"Bearer {person.token}"}
            ).json()
            assert me["bootstrapped"] is True and me["keyCount"] == 1
        finally:
            replacement.stop()
