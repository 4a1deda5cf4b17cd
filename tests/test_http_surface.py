"""The HTTP surface through the real Envoy: error shapes, Envoy's own errors, limits and headers."""

from __future__ import annotations

import json
import logging

import httpx
import openai
import pytest

from server.jsonlog import JsonFormatter
from tests.support.gateway import Gateway
from tests.support.people import OPENED
from tests.support.waiting import eventually

TEN_AND_A_HALF_MIB = 10 * 1024 * 1024 + 512 * 1024


def openai_client(gateway: Gateway, api_key: str = "cc_live_not-a-real-key") -> openai.OpenAI:
    """Closed when the test ends, with the clients of `Person.openai`."""
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=api_key, max_retries=0)
    OPENED.append(client)
    return client


def test_api_routes_answer_errors_in_the_api_shape(http: httpx.Client) -> None:
    response = http.get("/api/agents/me")
    assert response.status_code == 401
    body = response.json()
    assert body == {"ok": False, "error": {"code": "MISSING_API_KEY", "message": body["error"]["message"]}}


def test_openai_routes_answer_errors_in_openai_shape_and_the_client_raises(gateway: Gateway) -> None:
    client = openai_client(gateway)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.models.list()
    assert raised.value.status_code == 401
    assert raised.value.body == {
        "message": "Incorrect API key provided.",
        "type": "authentication_error",
        "code": "invalid_api_key",
        "param": None,
    }
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="x", input="hello")
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["code"] == "not_found"


def test_bad_json_is_a_400_in_the_route_shape_and_reaches_nothing(
    gateway: Gateway, http: httpx.Client
) -> None:
    response = http.post("/api/keys", content=b'{"label": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == "INVALID_REQUEST"
    assert body["error"]["message"]
    assert gateway.recorder.take() == []


@pytest.mark.parametrize(
    ("path", "openai_shape"), [("/v1/chat/completions", True), ("/api/keys", False)], ids=["v1", "api"]
)
def test_bodies_over_the_limit_are_413_in_the_route_shape(
    gateway: Gateway, http: httpx.Client, path: str, openai_shape: bool
) -> None:
    too_large = b'{"x": "' + b"a" * (gateway.settings.max_body_bytes + 1024) + b'"}'
    response = http.post(path, content=too_large, headers={"content-type": "application/json"})
    assert response.status_code == 413
    body = response.json()
    if openai_shape:
        assert body["error"]["code"] == "request_too_large"
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert body == {
            "ok": False,
            "error": {"code": "REQUEST_TOO_LARGE", "message": "The request body is too large."},
        }
    assert gateway.recorder.take() == []


def test_bodies_over_ten_mib_reach_the_server(gateway: Gateway, http: httpx.Client) -> None:
    content = "x" * TEN_AND_A_HALF_MIB
    payload = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    response = http.post("/v1/chat/completions", json=payload)
    assert gateway.recorder.take() == ["/crosscompute.v1.InferenceService/CreateChatCompletion"]
    assert response.status_code == 401, "it reached the method, which wants a real key"


def test_unknown_query_parameters_are_ignored(http: httpx.Client) -> None:
    response = http.get("/health", params={"utm_source": "newsletter", "verbose": "1"})
    assert response.status_code == 200
    assert response.json()["ok"] is True


def test_responses_carry_a_request_id_and_no_grpc_headers(http: httpx.Client) -> None:
    for path in ("/health", "/api/config", "/api/me", "/v1/models", "/nowhere"):
        response = http.get(path)
        assert response.headers.get("x-request-id"), path
        leaked = [
            name
            for name in response.headers
            if name.startswith("grpc-") or name.startswith("x-crosscompute-")
        ]
        assert leaked == [], (path, leaked)


def test_the_request_id_reaches_the_access_log_and_secrets_do_not(
    gateway: Gateway, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "cc_live_" + "S3cr3tK3y" * 5
    caplog.set_level(logging.INFO)
    http.get("/api/me", headers={"x-request-id": "trace-4242", "authorization": f"Bearer {secret}"})
    # An aborted call answers the client before its log line is written: wait for the line.
    calls = eventually(
        lambda: [record for record in caplog.records if record.name == "crosscompute.access"],
        what="the access log line",
    )
    assert len(calls) == 1
    line = json.loads(JsonFormatter().format(calls[0]))
    assert line["method"] == "/crosscompute.v1.AccountsService/GetMe"
    assert line["status"] == "UNAUTHENTICATED"
    assert line["request_id"] == "trace-4242"
    assert isinstance(line["latency_ms"], float)
    formatted = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert secret not in formatted
    assert "S3cr3tK3y" not in formatted
