"""Supabase access tokens, verified for real: ES256 through a locally served JWKS and HS256 with the
legacy secret; every bad token is a 401 that says why and never echoes the token."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.support.gateway import Gateway
from tests.support.supabase import SigningKey, SupabaseStandIn


def me(http: httpx.Client, token: str) -> httpx.Response:
    return http.get("/api/me", headers={"authorization": f"Bearer {token}"})


def test_an_es256_token_signs_in_before_bootstrap(http: httpx.Client, supabase: SupabaseStandIn) -> None:
    claims = supabase.claims(email="ada@example.com")
    response = me(http, supabase.es256(claims))
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "user": {"id": claims["sub"], "email": "ada@example.com"},
        "bootstrapped": False,
        "keyCount": 0,
    }


def test_an_rs256_token_signs_in(http: httpx.Client, supabase: SupabaseStandIn) -> None:
    claims = supabase.claims()
    response = me(http, supabase.rs256(claims))
    assert response.status_code == 200
    assert response.json()["user"]["id"] == claims["sub"]


def test_an_hs256_token_of_an_older_project_signs_in(http: httpx.Client, supabase: SupabaseStandIn) -> None:
    claims = supabase.claims()
    response = me(http, supabase.hs256(claims))
    assert response.status_code == 200
    assert response.json()["user"]["id"] == claims["sub"]


def unsigned(supabase: SupabaseStandIn) -> str:
    return jwt.encode(supabase.claims(), key="", algorithm="none")


def tampered(supabase: SupabaseStandIn) -> str:
    header, payload, signature = supabase.es256(supabase.claims()).split(".")
    other = supabase.es256(supabase.claims(sub="00000000-0000-0000-0000-000000000000")).split(".")[1]
    assert other != payload
    return f"{header}.{other}.{signature}"


BAD_TOKENS: dict[str, tuple[Callable[[SupabaseStandIn], str], str]] = {
    "expired": (
        lambda s: s.es256(s.claims(exp=int(time.time()) - 120, iat=int(time.time()) - 7200)),
        "TOKEN_EXPIRED",
    ),
    "wrong audience": (lambda s: s.es256(s.claims(aud="somebody-else")), "INVALID_AUDIENCE"),
    "wrong issuer": (lambda s: s.es256(s.claims(iss="https://evil.supabase.co/auth/v1")), "INVALID_ISSUER"),
    "unknown kid": (lambda s: s.es256(s.claims(), key=SigningKey()), "UNKNOWN_SIGNING_KEY"),
    "tampered signature": (tampered, "INVALID_SIGNATURE"),
    "alg none": (unsigned, "UNSUPPORTED_ALGORITHM"),
    "anon role": (lambda s: s.es256(s.claims(role="anon")), "ANON_TOKEN"),
    "wrong hs256 secret": (
        lambda s: s.hs256(s.claims(), secret="not-the-project-secret-" * 2),
        "INVALID_SIGNATURE",
    ),
    "no subject": (lambda s: s.es256(s.claims(sub=None)), "MISSING_CLAIM"),
    "no expiry": (lambda s: s.es256(s.claims(exp=None)), "MISSING_CLAIM"),
    "not a jwt": (lambda s: "not-a-jwt-at-all", "MALFORMED_TOKEN"),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_tokens_are_401_with_a_reason_and_no_echo(
    http: httpx.Client, supabase: SupabaseStandIn, gateway: Gateway, case: str
) -> None:
    make, reason = BAD_TOKENS[case]
    token = make(supabase)
    response = me(http, token)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == reason
    assert token not in response.text
    for part in token.split("."):
        if len(part) > 8:
            assert part not in response.text


def test_a_missing_token_is_401(http: httpx.Client) -> None:
    for headers in ({}, {"authorization": "Basic dXNlcjpwYXNz"}, {"authorization": "Bearer"}):
        response = http.get("/api/me", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "MISSING_CREDENTIALS"


def test_signing_keys_are_cached_and_a_new_kid_is_fetched_once(
    http: httpx.Client, supabase: SupabaseStandIn
) -> None:
    assert me(http, supabase.es256(supabase.claims())).status_code == 200
    fetches = supabase.fetches
    for _ in range(5):
        assert me(http, supabase.es256(supabase.claims())).status_code == 200
    assert supabase.fetches == fetches, "known keys are served from the cache"

    rotated = SigningKey()
    supabase.keys.append(rotated)
    try:
        assert me(http, supabase.es256(supabase.claims(), key=rotated)).status_code == 200
        assert supabase.fetches == fetches + 1, "an unknown kid refetches the set once"
        assert me(http, supabase.es256(supabase.claims(), key=rotated)).status_code == 200
        assert supabase.fetches == fetches + 1
    finally:
        supabase.keys.remove(rotated)


def test_an_unreachable_jwks_keeps_the_keys_it_has(http: httpx.Client, supabase: SupabaseStandIn) -> None:
    assert me(http, supabase.es256(supabase.claims())).status_code == 200
    supabase.failing = True
    try:
        assert me(http, supabase.es256(supabase.claims())).status_code == 200
        response = me(http, supabase.es256(supabase.claims(), key=SigningKey()))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNKNOWN_SIGNING_KEY"
    finally:
        supabase.failing = False


def test_claims_are_read_only_from_verified_tokens(http: httpx.Client, supabase: SupabaseStandIn) -> None:
    claims: dict[str, Any] = supabase.claims(email="real@example.com")
    response = me(http, supabase.es256(claims))
    assert response.json()["user"] == {"id": claims["sub"], "email": "real@example.com"}
