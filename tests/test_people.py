"""People: bootstrap, API keys and their quotas, through the real Envoy on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import openai
import pytest

from server.domain.api_keys import KeyKind, make_key
from tests.conftest import MAX_ACTIVE_KEYS
from tests.support.db import execute, query
from tests.support.gateway import Gateway
from tests.support.people import Person, sign_in
from tests.support.supabase import SupabaseStandIn

SIGNUP_CREDITS = 100


@pytest.fixture
def person(gateway: Gateway, supabase: SupabaseStandIn, http: httpx.Client) -> Person:
    return sign_in(gateway, supabase, http)


@pytest.fixture
def other(gateway: Gateway, supabase: SupabaseStandIn) -> Iterator[Person]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        yield sign_in(gateway, supabase, client)


def test_bootstrap_creates_the_account_grant_and_first_key_once(person: Person) -> None:
    first = person.bootstrap()
    assert first["created"] is True
    assert first["apiKey"].startswith("cc_live_") and len(first["apiKey"]) == len("cc_live_") + 43
    assert first["key"]["label"] == "Default"
    assert first["key"]["prefix"] == first["apiKey"][: len("cc_live_") + 8]
    assert first["key"]["active"] is True
    assert first["account"]["balanceCredits"] == SIGNUP_CREDITS
    assert first["account"]["grantedCredits"] == SIGNUP_CREDITS
    assert first["profile"]["userId"] == person.user_id

    again = person.bootstrap()
    assert again["created"] is False
    assert "apiKey" not in again
    assert again["key"]["id"] == first["key"]["id"]
    assert again["account"]["balanceCredits"] == SIGNUP_CREDITS

    me = person.get("/api/me").json()
    assert me["bootstrapped"] is True
    assert me["keyCount"] == 1
    assert me["account"]["balanceCredits"] == SIGNUP_CREDITS
    assert me["profile"]["email"].endswith("@example.com")


def test_racing_bootstraps_create_one_account_and_one_key(gateway: Gateway, person: Person) -> None:
    def bootstrap(_: int) -> httpx.Response:
        with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
            return client.post(
                "/api/bootstrap-account", json={}, headers={"authorization": f"Bearer {person.token}"}
            )

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(bootstrap, range(8)))
    assert [response.status_code for response in responses] == [200] * 8
    bodies = [response.json() for response in responses]
    assert sum(body["created"] for body in bodies) == 1
    assert sum("apiKey" in body for body in bodies) == 1
    accounts = query(
        gateway.settings,
        "SELECT id FROM accounts WHERE kind = 'person' AND external_id = :sub",
        sub=person.user_id,
    )
    assert len(accounts) == 1
    keys = query(gateway.settings, "SELECT id FROM api_keys WHERE account_id = :id", id=accounts[0]["id"])
    assert len(keys) == 1
    grants = query(
        gateway.settings,
        "SELECT amount_micro FROM ledger_entries WHERE account_id = :id",
        id=accounts[0]["id"],
    )
    assert grants == [{"amount_micro": SIGNUP_CREDITS * 1_000_000}]


def test_keys_are_listed_without_secrets_newest_first(person: Person) -> None:
    secret = person.bootstrap()["apiKey"]
    created = person.post("/api/keys", {"label": "Production", "quotaCredits": 12.5})
    assert created.status_code == 200, created.text
    new = created.json()
    assert new["apiKey"].startswith("cc_live_")
    assert new["key"]["quotaCredits"] == 12.5
    assert new["key"]["remainingCredits"] == 12.5
    assert new["key"]["usedCredits"] == 0

    listing = person.get("/api/keys")
    assert listing.status_code == 200
    keys = listing.json()["keys"]
    assert [key["label"] for key in keys] == ["Production", "Default"]
    assert set(keys[0]) == {
        "id",
        "label",
        "prefix",
        "quotaCredits",
        "usedCredits",
        "remainingCredits",
        "active",
        "createdAt",
        "lastUsedAt",
    }
    assert set(keys[1]) == set(keys[0]), "every key shows every field"
    assert keys[1]["quotaCredits"] is None, "no quota: only the balance limits it"
    assert keys[1]["remainingCredits"] == SIGNUP_CREDITS
    datetime.fromisoformat(keys[0]["createdAt"].replace("Z", "+00:00"))
    assert secret not in listing.text and new["apiKey"] not in listing.text


def test_a_keys_quota_is_null_without_one_and_a_number_with_one_wherever_the_key_is_shown(
    person: Person,
) -> None:
    booted = person.bootstrap()
    assert "quotaCredits" in booted["key"] and booted["key"]["quotaCredits"] is None
    assert "lastUsedAt" in booted["key"] and booted["key"]["lastUsedAt"] is None
    again = person.bootstrap()
    assert "quotaCredits" in again["key"] and again["key"]["quotaCredits"] is None

    plain = person.post("/api/keys", {"label": "No quota"}).json()["key"]
    assert "quotaCredits" in plain and plain["quotaCredits"] is None
    capped = person.post("/api/keys", {"label": "Capped", "quotaCredits": 7.25}).json()["key"]
    assert capped["quotaCredits"] == 7.25
    zero = person.post("/api/keys", {"label": "Zero", "quotaCredits": 0}).json()["key"]
    assert zero["quotaCredits"] == 0 and zero["remainingCredits"] == 0, "a quota of 0 is a quota, not null"

    listed = {key["label"]: key for key in person.get("/api/keys").json()["keys"]}
    for label in ("Default", "No quota"):
        assert "quotaCredits" in listed[label] and listed[label]["quotaCredits"] is None, label
        assert listed[label]["remainingCredits"] == SIGNUP_CREDITS
    assert listed["Capped"]["quotaCredits"] == 7.25 and listed["Capped"]["remainingCredits"] == 7.25
    assert listed["Zero"]["quotaCredits"] == 0
    assert all(key["usedCredits"] == 0 for key in listed.values()), "zeros are printed"

    stopped = person.post(f"/api/keys/{plain['id']}/deactivate").json()["key"]
    assert "quotaCredits" in stopped and stopped["quotaCredits"] is None
    assert stopped["active"] is False, "false is printed"
    stopped = person.post(f"/api/keys/{capped['id']}/deactivate").json()["key"]
    assert stopped["quotaCredits"] == 7.25


def test_me_shows_every_field_before_and_after_bootstrap(person: Person) -> None:
    """`/api/me` shows no key and no quota: only the account's totals and how many keys it has."""
    before = person.get("/api/me").json()
    assert before["bootstrapped"] is False and before["keyCount"] == 0
    assert set(before["user"]) == {"id", "email"}
    person.bootstrap()
    after = person.get("/api/me").json()
    assert set(after) == {"ok", "user", "bootstrapped", "profile", "account", "keyCount"}
    assert after["account"]["usedCredits"] == 0 and after["account"]["purchasedCredits"] == 0
    assert "quotaCredits" not in after["account"], "a quota belongs to a key, not to the account"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"quotaCredits": 5}, "label"),
        ({"label": "   "}, "label"),
        ({"label": "x" * 101}, "label"),
        ({"label": "ok", "quotaCredits": -1}, "quotaCredits"),
        ({"label": "ok", "quotaCredits": 1_000_000_001}, "quotaCredits"),
        ({"label": "ok", "quotaCredits": 0.0000001}, "quotaCredits"),
        ({"label": "ok", "quotaCredits": "NaN"}, "quotaCredits"),
        ({"label": "ok", "quotaCredits": "Infinity"}, "quotaCredits"),
    ],
)
def test_bad_key_requests_are_400_and_change_nothing(
    person: Person, body: dict[str, object], param: str
) -> None:
    person.bootstrap()
    response = person.post("/api/keys", body)
    assert response.status_code == 400, response.text
    assert response.json()["ok"] is False
    assert param in response.json()["error"]["message"]
    assert len(person.get("/api/keys").json()["keys"]) == 1


def test_wrongly_typed_fields_are_400_in_the_api_shape(person: Person) -> None:
    person.bootstrap()
    response = person.post("/api/keys", {"label": "ok", "quotaCredits": "lots"})
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert len(person.get("/api/keys").json()["keys"]) == 1


def test_the_active_key_cap_holds(person: Person) -> None:
    person.bootstrap()
    for n in range(MAX_ACTIVE_KEYS - 1):
        assert person.post("/api/keys", {"label": f"key {n}"}).status_code == 200
    refused = person.post("/api/keys", {"label": "one too many"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "TOO_MANY_KEYS"
    victim = person.get("/api/keys").json()["keys"][0]["id"]
    assert person.post(f"/api/keys/{victim}/deactivate").status_code == 200
    assert person.post("/api/keys", {"label": "room again"}).status_code == 200


def test_keys_before_bootstrap(person: Person) -> None:
    assert person.get("/api/keys").json() == {"ok": True, "keys": []}
    refused = person.post("/api/keys", {"label": "early"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "NOT_BOOTSTRAPPED"


def test_a_deactivated_key_is_refused_at_once_and_deactivating_again_is_harmless(person: Person) -> None:
    boot = person.bootstrap()
    client = person.openai(boot["apiKey"])
    models = client.models.list()
    assert {model.id for model in models.data} >= {"auto", "cheap", "medium", "premium"}

    response = person.post(f"/api/keys/{boot['key']['id']}/deactivate")
    assert response.status_code == 200
    assert response.json()["key"]["active"] is False
    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert refused.value.code == "api_key_deactivated"
    assert person.post(f"/api/keys/{boot['key']['id']}/deactivate").status_code == 200


def test_nobody_lists_or_deactivates_another_persons_keys(person: Person, other: Person) -> None:
    mine = person.bootstrap()
    other.bootstrap()
    assert mine["key"]["id"] not in other.get("/api/keys").text
    refused = other.post(f"/api/keys/{mine['key']['id']}/deactivate")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "KEY_NOT_FOUND"
    assert other.post(f"/api/keys/{uuid.uuid4()}/deactivate").status_code == 404
    malformed = other.post("/api/keys/not-a-uuid/deactivate")
    assert malformed.status_code == 400
    assert person.get("/api/keys").json()["keys"][0]["active"] is True
    assert person.openai(mine["apiKey"]).models.list().data


def test_the_inference_api_refuses_missing_and_unknown_keys(person: Person, gateway: Gateway) -> None:
    for key, code in [
        ("", "missing_api_key"),
        ("sk-some-openai-key", "invalid_api_key"),
        (make_key(KeyKind.LIVE).secret, "invalid_api_key"),
    ]:
        with (
            openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key or "x", max_retries=0) as client,
            pytest.raises(openai.AuthenticationError) as refused,
        ):
            client.models.list(extra_headers={"authorization": ""} if not key else None)
        assert refused.value.code == code
        assert refused.value.status_code == 401


def test_using_a_key_records_when_it_was_last_used(person: Person) -> None:
    secret = person.bootstrap()["apiKey"]
    never = person.get("/api/keys").json()["keys"][0]
    assert "lastUsedAt" in never and never["lastUsedAt"] is None, "never used: JSON null"
    person.openai(secret).models.list()
    used = person.get("/api/keys").json()["keys"][0]
    last_used = datetime.fromisoformat(used["lastUsedAt"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(used["createdAt"].replace("Z", "+00:00"))
    assert last_used >= created


def test_models_answer_with_the_catalog_headers(person: Person, http: httpx.Client) -> None:
    secret = person.bootstrap()["apiKey"]
    response = http.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    assert response.headers["x-crosscompute-model-catalog"] == "local"
    assert response.headers["x-crosscompute-model-count"] == str(len(response.json()["data"]))
    entry = person.openai(secret).models.retrieve("eco")
    assert (entry.id, entry.owned_by) == ("cheap", "crosscompute")
    with pytest.raises(openai.NotFoundError):
        person.openai(secret).models.retrieve("openai/no-such-model")


def test_agent_keys_authenticate_too(gateway: Gateway, person: Person) -> None:
    """Agents register with their own issue; their keys already pass the same authentication."""
    key = make_key(KeyKind.AGENT)
    account_id = str(uuid.uuid4())
    now = datetime.now().isoformat(sep=" ")
    statements = [
        (
            "INSERT INTO accounts (id, kind, external_id, balance_micro, granted_micro, purchased_micro, "
            "used_micro, created_at, updated_at) VALUES (:id, 'agent', :agent, 0, 0, 0, 0, :now, :now)",
            {"id": account_id, "agent": f"agent-{account_id[:8]}", "now": now},
        ),
        (
            "INSERT INTO api_keys (id, account_id, label, prefix, secret_hash, used_micro, active, "
            "created_at) VALUES (:id, :account, 'agent', :prefix, :digest, 0, true, :now)",
            {
                "id": str(uuid.uuid4()),
                "account": account_id,
                "prefix": key.prefix,
                "digest": key.digest,
                "now": now,
            },
        ),
    ]
    execute(gateway.settings, statements)
    assert person.openai(key.secret).models.list().data


def test_the_database_holds_no_usable_secret(gateway: Gateway, person: Person, http: httpx.Client) -> None:
    first = person.bootstrap()["apiKey"]
    second = person.post("/api/keys", {"label": "Second"}).json()["apiKey"]
    rows = query(gateway.settings, "SELECT * FROM api_keys")
    dump = repr(rows) + repr(query(gateway.settings, "SELECT * FROM ledger_entries"))
    for secret in (first, second):
        random_part = secret.removeprefix("cc_live_")
        assert secret not in dump
        assert random_part[8:] not in dump, "only the visible prefix is stored"
    for row in rows:
        for value in (row["secret_hash"], row["prefix"]):
            refused = http.get("/v1/models", headers={"authorization": f"Bearer {value}"})
            assert refused.status_code == 401, "what is stored cannot be used as a key"
