"""Agents join with no human: register, get a cc_agent_ key, read their account and usage, and call
the inference API; nobody else can take an agent over. Through the real Envoy, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import gateway_settings
from tests.support.db import execute
from tests.support.gateway import Gateway, running_gateway
from tests.support.supabase import SupabaseStandIn

#: The fields crosscompute.io's published registry lists for `/api/agents/me` and `/api/agents/usage`.
REGISTRY_ACCOUNT = {"id", "agentId", "name", "skillMdUrl", "creditsPurchased"}
REGISTRY_KEY = {"id", "label", "prefix", "quotaCredits", "usedCredits", "remainingCredits", "active"}
REGISTRY_USAGE = {
    "agentId",
    "keyPrefix",
    "quotaCredits",
    "usedCredits",
    "remainingCredits",
    "creditsPurchased",
}


def new_agent_id() -> str:
    return f"agent.{uuid.uuid4().hex[:12]}:test"


def register(http: httpx.Client, body: dict[str, object], **headers: str) -> httpx.Response:
    return http.post("/api/agents/register", json=body, headers=headers)


def test_registration_creates_once_and_shows_the_key_once(http: httpx.Client) -> None:
    agent_id = new_agent_id()
    first = register(
        http, {"agentId": agent_id, "name": "Ops Agent", "skillMdUrl": "https://example.com/skill.md"}
    )
    assert first.status_code == 201
    body = first.json()
    assert body["created"] is True
    assert body["apiKey"].startswith("cc_agent_") and len(body["apiKey"]) == len("cc_agent_") + 43
    assert body["account"] == {
        "id": body["account"]["id"],
        "agentId": agent_id,
        "name": "Ops Agent",
        "skillMdUrl": "https://example.com/skill.md",
        "creditsPurchased": 0,
    }
    assert body["key"]["prefix"] == body["apiKey"][: len("cc_agent_") + 8]
    assert body["key"]["active"] is True and body["key"]["remainingCredits"] == 0

    again = register(http, {"agentId": agent_id})
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["apiKey"] is None
    assert again.json()["account"]["name"] == "Ops Agent", "nothing changes without the agent's key"


def test_only_the_agents_own_key_updates_it(http: httpx.Client) -> None:
    mine, theirs = new_agent_id(), new_agent_id()
    key = register(http, {"agentId": mine, "name": "Mine"}).json()["apiKey"]
    other_key = register(http, {"agentId": theirs, "name": "Theirs"}).json()["apiKey"]

    takeover = register(http, {"agentId": mine, "name": "Hijacked"}, authorization=f"Bearer {other_key}")
    assert takeover.status_code == 403
    assert takeover.json()["error"]["code"] == "NOT_THIS_AGENTS_KEY"
    anonymous = register(
        http, {"agentId": mine, "name": "Hijacked", "skillMdUrl": "https://evil.example/x.md"}
    )
    assert anonymous.json()["account"]["name"] == "Mine"

    updated = register(http, {"agentId": mine, "name": "Renamed"}, authorization=f"Bearer {key}")
    assert updated.status_code == 200
    assert updated.json()["account"]["name"] == "Renamed"
    me = http.get("/api/agents/me", headers={"authorization": f"Bearer {key}"}).json()
    assert me["account"]["name"] == "Renamed"
    assert "skillMdUrl" in me["account"] and me["account"]["skillMdUrl"] is None, "never set: JSON null"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "agentId"),
        ({"agentId": "ab"}, "agentId"),
        ({"agentId": "has spaces"}, "agentId"),
        ({"agentId": "x" * 129}, "agentId"),
        ({"agentId": "fine-id", "name": "n" * 121}, "name"),
        ({"agentId": "fine-id", "skillMdUrl": "ftp://example.com/skill.md"}, "skillMdUrl"),
        ({"agentId": "fine-id", "skillMdUrl": "https://example.com/" + "a" * 1000}, "skillMdUrl"),
    ],
)
def test_bad_registrations_are_400(http: httpx.Client, body: dict[str, object], param: str) -> None:
    response = register(http, body)
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert param in response.json()["error"]["message"]


def test_an_agent_reads_its_account_and_usage_and_calls_the_simulator(
    http: httpx.Client, gateway: Gateway
) -> None:
    agent_id = new_agent_id()
    key = register(http, {"agentId": agent_id, "name": "Worker"}).json()["apiKey"]
    headers = {"authorization": f"Bearer {key}"}
    me = http.get("/api/agents/me", headers=headers)
    assert me.status_code == 200
    assert set(me.json()["account"]) == {"id", "agentId", "name", "skillMdUrl", "creditsPurchased"}
    assert set(me.json()["key"]) == REGISTRY_KEY
    assert me.json()["account"]["skillMdUrl"] is None

    with openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="crosscompute/simulator", messages=[{"role": "user", "content": "Hello from an agent"}]
        )
    assert "not a real model" in (answer.choices[0].message.content or "")

    usage = http.get("/api/agents/usage", headers=headers)
    assert usage.status_code == 200
    assert usage.json()["usage"] == {
        "agentId": agent_id,
        "keyPrefix": key[: len("cc_agent_") + 8],
        "quotaCredits": None,
        "usedCredits": 0,
        "remainingCredits": 0,
        "creditsPurchased": 0,
        "requestCount": 1,
    }


def test_registry_fields_are_always_present_null_when_unset(http: httpx.Client) -> None:
    """crosscompute.io's registry lists these fields: each is in every answer, JSON null when unset."""
    agent_id = new_agent_id()
    registered = register(http, {"agentId": agent_id})
    assert registered.status_code == 201
    body = registered.json()
    assert set(body["account"]) == REGISTRY_ACCOUNT and set(body["key"]) == REGISTRY_KEY
    assert "name" in body["account"] and body["account"]["name"] is None
    assert "skillMdUrl" in body["account"] and body["account"]["skillMdUrl"] is None
    assert "quotaCredits" in body["key"] and body["key"]["quotaCredits"] is None
    headers = {"authorization": f"Bearer {body['apiKey']}"}

    again = register(http, {"agentId": agent_id}).json()
    assert again["created"] is False and again["apiKey"] is None, "false and null are printed"
    assert "name" in again["account"] and again["account"]["name"] is None
    assert "quotaCredits" in again["key"] and again["key"]["quotaCredits"] is None

    me = http.get("/api/agents/me", headers=headers).json()
    assert set(me["account"]) == REGISTRY_ACCOUNT and set(me["key"]) == REGISTRY_KEY
    assert "name" in me["account"] and me["account"]["name"] is None
    assert "skillMdUrl" in me["account"] and me["account"]["skillMdUrl"] is None
    assert me["account"]["creditsPurchased"] == 0, "zeros are printed"
    assert "quotaCredits" in me["key"] and me["key"]["quotaCredits"] is None
    assert (me["key"]["usedCredits"], me["key"]["remainingCredits"], me["key"]["active"]) == (0, 0, True)

    usage = http.get("/api/agents/usage", headers=headers).json()["usage"]
    assert set(usage) == REGISTRY_USAGE | {"requestCount"}
    assert "quotaCredits" in usage and usage["quotaCredits"] is None
    assert (usage["usedCredits"], usage["remainingCredits"], usage["creditsPurchased"]) == (0, 0, 0)
    assert usage["requestCount"] == 0


def test_a_quota_on_an_agents_key_is_shown_as_a_number(http: httpx.Client, gateway: Gateway) -> None:
    """The API gives agents no way to set a quota; an operator may, in the database."""
    registered = register(
        http, {"agentId": new_agent_id(), "name": "Capped", "skillMdUrl": "https://example.com/s.md"}
    ).json()
    execute(
        gateway.settings,
        [("UPDATE api_keys SET quota_micro = 2500000 WHERE id = :id", {"id": registered["key"]["id"]})],
    )
    headers = {"authorization": f"Bearer {registered['apiKey']}"}
    me = http.get("/api/agents/me", headers=headers).json()
    assert me["key"]["quotaCredits"] == 2.5
    assert me["account"]["name"] == "Capped" and me["account"]["skillMdUrl"] == "https://example.com/s.md"
    assert http.get("/api/agents/usage", headers=headers).json()["usage"]["quotaCredits"] == 2.5
    updated = register(http, {"agentId": me["account"]["agentId"]}, authorization=headers["authorization"])
    assert updated.json()["key"]["quotaCredits"] == 2.5

    execute(
        gateway.settings,
        [("UPDATE api_keys SET quota_micro = 0 WHERE id = :id", {"id": registered["key"]["id"]})],
    )
    me = http.get("/api/agents/me", headers=headers).json()
    assert me["key"]["quotaCredits"] == 0, "a quota of 0 is a quota, not null"
    assert http.get("/api/agents/usage", headers=headers).json()["usage"]["quotaCredits"] == 0


def test_agent_endpoints_want_an_agent_key(
    http: httpx.Client, gateway: Gateway, supabase: SupabaseStandIn
) -> None:
    from tests.support.people import sign_in

    person_key = sign_in(gateway, supabase, http).bootstrap()["apiKey"]
    refused = http.get("/api/agents/me", headers={"authorization": f"Bearer {person_key}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "NOT_AN_AGENT_KEY"
    assert http.get("/api/agents/usage").status_code == 401


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, supabase: SupabaseStandIn) -> Iterator[Gateway]:
    database = f"sqlite:///{tmp_path_factory.mktemp('agents') / 'db.sqlite3'}"
    settings = gateway_settings(
        database,
        supabase,
        AGENT_REGISTRATION_SECRET="let-me-register-0451",
        CROSSCOMPUTE_AGENT_REGISTRATIONS_PER_HOUR="3",
    )
    with running_gateway(settings) as running:
        yield running


def test_the_registration_secret_is_required_when_set(guarded: Gateway) -> None:
    with httpx.Client(base_url=guarded.base_url) as http:
        for headers in ({}, {"x-agent-registration-secret": "guess"}):
            refused = register(http, {"agentId": new_agent_id()}, **headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "REGISTRATION_SECRET_REQUIRED"
            assert "let-me-register" not in refused.text


def test_registrations_are_rate_limited_per_address(guarded: Gateway) -> None:
    secret = {"x-agent-registration-secret": "let-me-register-0451"}
    with httpx.Client(base_url=guarded.base_url) as http:
        statuses = [register(http, {"agentId": new_agent_id()}, **secret).status_code for _ in range(5)]
        assert statuses == [201, 201, 201, 429, 429]
        limited = register(http, {"agentId": new_agent_id()}, **secret)
        assert limited.json()["error"]["code"] == "REGISTRATION_RATE_LIMITED"
        assert limited.headers["retry-after"] == "3600"
