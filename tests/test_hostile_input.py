"""Hostile input. Schemathesis fuzzes the contract through the real Envoy (bounded examples): no 5xx,
and answers conform to the contract. Hand-made attacks on the chat body (invalid UTF-8, deep nesting,
huge numbers, wrong types, duplicate keys, 20 MB) each get a clean 4xx in OpenAI's shape, and bill
nothing."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import gateway_settings
from tests.support.db import query
from tests.support.gateway import Gateway, running_gateway
from tests.support.people import sign_in
from tests.support.supabase import SupabaseStandIn

CONTRACT = Path(__file__).resolve().parent.parent.parent / "shared" / "spec" / "crosscompute-openapi.json"
schema = schemathesis.openapi.from_path(str(CONTRACT))


@dataclass(frozen=True)
class Target:
    """The gateway under attack and the one key every request here is sent with."""

    gateway: Gateway
    key: str
    key_id: str
    account_id: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, supabase: SupabaseStandIn) -> Iterator[Target]:
    database = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'db.sqlite3'}"
    with (
        running_gateway(gateway_settings(database, supabase)) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        person = sign_in(gateway, supabase, http)
        bootstrapped = person.bootstrap()
        (key,) = query(
            gateway.settings,
            "SELECT id, account_id FROM api_keys WHERE id = :id",
            id=bootstrapped["key"]["id"],
        )
        yield Target(gateway, bootstrapped["apiKey"], key["id"], key["account_id"])


def books(target: Target) -> dict[str, int]:
    """This key's usage records, its used credits and its account's balance (nobody else's)."""
    (row,) = query(
        target.gateway.settings,
        "SELECT (SELECT COUNT(*) FROM usage_records u WHERE u.key_id = k.id OR u.account_id = a.id) "
        "AS records, k.used_micro AS used, a.balance_micro AS balance "
        "FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.id = :key AND a.id = :account",
        key=target.key_id,
        account=target.account_id,
    )
    return {name: int(value) for name, value in row.items()}


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_contract_survives_fuzzing(case: schemathesis.Case[Any], target: Target) -> None:
    response = case.call(base_url=target.gateway.base_url, headers={"authorization": f"Bearer {target.key}"})
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


ATTACKS = {
    "invalid utf-8": b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "deep nesting": b'{"model": "auto", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "huge numbers": b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e400}',
    "huge integer": b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": '
    + b"9" * 5000
    + b"}",
    "wrong types": b'{"model": 7, "messages": "hello"}',
    "duplicate keys": b'{"model": "auto", "model": "premium", "messages": []}',
    "not an object": b'"just a string"',
    "empty": b"",
    "null message": b'{"model": "auto", "messages": [null]}',
}


def test_a_valid_request_on_the_key_is_counted(target: Target) -> None:
    """The control for the attacks below: what they must not change does move for a real call."""
    before = books(target)
    response = httpx.post(
        f"{target.gateway.base_url}/v1/chat/completions",
        json={"model": "crosscompute/simulator", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {target.key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:200]
    after = books(target)
    assert after["records"] == before["records"] + 1
    assert after["used"] - before["used"] == before["balance"] - after["balance"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_on_the_chat_body_are_clean_4xx_and_bill_nothing(target: Target, attack: str) -> None:
    before = books(target)
    response = httpx.post(
        f"{target.gateway.base_url}/v1/chat/completions",
        content=ATTACKS[attack],
        headers={"authorization": f"Bearer {target.key}", "content-type": "application/json"},
        timeout=30,
    )
    assert 400 <= response.status_code < 500, (attack, response.status_code, response.text[:200])
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert books(target) == before, "no usage record, no credits used, the balance untouched"


def test_a_20_mb_body_is_413_and_bills_nothing(target: Target) -> None:
    before = books(target)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 20_000_000}]}).encode()
    response = httpx.post(
        f"{target.gateway.base_url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {target.key}", "content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert books(target) == before


def test_header_injection_gets_a_clean_4xx_and_bills_nothing(target: Target) -> None:
    """A bare CR (or LF) smuggled into a header value must not forge a second header."""
    before = books(target)
    host, port = target.gateway.base_url.removeprefix("http://").split(":")
    for separator in (b"\r", b"\n"):
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Note: a" + separator + b"Authorization: Bearer " + target.key.encode() + b"\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(request)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:120]
        if status != 400:  # Envoy's own 400 for malformed HTTP may have no body; anything else is ours
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert body["error"]["code"] == "missing_api_key", "the smuggled Authorization was not honoured"
    assert books(target) == before
