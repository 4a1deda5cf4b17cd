"""The contract (`../shared/spec/crosscompute-openapi.json`) against the protos and the real Envoy:
every operation reaches its gRPC method, and nothing else reaches any method."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest
from crosscompute.v1 import (
    accounts_service_pb2,
    admin_service_pb2,
    agents_service_pb2,
    inference_service_pb2,
    messages_service_pb2,
    responses_service_pb2,
    system_service_pb2,
)
from google.api import annotations_pb2
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor

from tests.support.gateway import Gateway

FILES: list[FileDescriptor] = [
    module.DESCRIPTOR
    for module in (
        system_service_pb2,
        accounts_service_pb2,
        agents_service_pb2,
        inference_service_pb2,
        messages_service_pb2,
        responses_service_pb2,
        admin_service_pb2,
    )
]
VERBS = ("get", "post", "put", "patch", "delete")
#: Operations beyond the contract: two from crosscompute.io's published parameter registry (README,
#: "Agents"), the dashboard's usage report (README, "The dashboard"), OpenAI's Responses API (README,
#: "OpenAI's Responses API") and Anthropic's Messages API (README, "Anthropic's Messages API").
EXTRA_OPERATIONS = {
    ("get", "/api/agents/usage-models"),
    ("get", "/api/agents/skill-md"),
    ("get", "/api/usage"),
    ("post", "/v1/responses"),
    ("get", "/v1/responses/{response_id}"),
    ("delete", "/v1/responses/{response_id}"),
    ("post", "/v1/messages"),
    ("post", "/v1/messages/count_tokens"),
}
PATH_VALUES = {"id": str(uuid.UUID(int=7)), "model_id": "openai/gpt-5-mini"}


def all_methods() -> list[MethodDescriptor]:
    return [
        method for file in FILES for service in file.services_by_name.values() for method in service.methods
    ]


def http_rules() -> dict[tuple[str, str], str]:
    """(verb, path template without variable patterns) → full gRPC method name, from the protos."""
    rules: dict[tuple[str, str], str] = {}
    for method in all_methods():
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        rule = options.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        assert verb is not None
        template = re.sub(r"\{(\w+)=[^}]*\}", r"{\1}", getattr(rule, verb))
        key = (verb, template)
        assert key not in rules, f"two methods share {key}"
        rules[key] = f"/{method.containing_service.full_name}/{method.name}"
    return rules


def contract_operations(contract_path: Path) -> list[tuple[str, str]]:
    spec = json.loads(contract_path.read_text())
    return [(verb, path) for path, item in spec["paths"].items() for verb in item if verb in VERBS]


def concrete(path: str, value_for: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: value_for[match.group(1)], path)


def test_the_contract_has_fourteen_operations(contract_path: Path) -> None:
    assert len(contract_operations(contract_path)) == 14


def test_every_operation_has_exactly_one_rpc_and_no_rpc_has_another_route(contract_path: Path) -> None:
    operations = set(contract_operations(contract_path))
    assert set(http_rules()) == operations | EXTRA_OPERATIONS


def test_admin_service_has_no_http_route() -> None:
    admin = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]
    assert admin.methods
    for method in admin.methods:
        assert not method.GetOptions().HasExtension(annotations_pb2.http), method.full_name


@pytest.mark.parametrize(
    "model_id", ["openai/gpt-5-mini", "openai%2Fgpt-5-mini", "deepseek-chat"], ids=["raw", "encoded", "plain"]
)
def test_every_operation_reaches_its_method_through_envoy(
    contract_path: Path, gateway: Gateway, http: httpx.Client, model_id: str
) -> None:
    rules = http_rules()
    for verb, path in contract_operations(contract_path):
        url = concrete(path, {**PATH_VALUES, "model_id": model_id})
        response = http.request(verb.upper(), url, json={} if verb == "post" else None)
        assert gateway.recorder.take() == [rules[(verb, path)]], (
            f"{verb.upper()} {url} → {response.status_code}"
        )
        assert response.headers["content-type"].startswith("application/json")
        assert response.status_code != 404 or path.startswith("/v1/models/"), response.text
        assert not any(name.startswith("grpc-") for name in response.headers), dict(response.headers)


def stray_requests(contract_path: Path) -> list[tuple[str, str]]:
    """Verbs the contract does not name on its paths, paths it does not have, and gRPC's own paths."""
    operations = contract_operations(contract_path)
    named = {path: {verb for verb, p in operations if p == path} for _, path in operations}
    strays = [
        (verb, concrete(path, PATH_VALUES))
        for path, verbs in named.items()
        for verb in VERBS
        if verb not in verbs
    ]
    strays += [
        ("post", "/"),  # `GET /` is the dashboard, which Envoy serves itself
        ("get", "/index.html"),
        ("get", "/dashboard/"),
        ("get", "/dashboard/missing.js"),
        ("get", "/api"),
        ("get", "/api/keys/" + PATH_VALUES["id"]),
        ("post", "/api/keys/" + PATH_VALUES["id"] + "/activate"),
        ("get", "/v1"),
        ("post", "/v1/completions"),
        ("post", "/v1/embeddings"),
        ("get", "/v1/chat/completions"),
        ("get", "/v1/messages"),
        ("post", "/v1/messages/batches"),
        ("get", "/v1/responses"),
        ("post", "/v1/responses/resp_1/cancel"),
        ("get", "/healthz"),
        ("get", "/api/agents/register"),
    ]
    # The transcoder's implicit `POST /package.Service/Method` bindings, for every method we have.
    strays += [("post", f"/{m.containing_service.full_name}/{m.name}") for m in all_methods()]
    strays += [
        ("post", "/grpc.health.v1.Health/Check"),
        ("post", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
    ]
    return strays


def test_no_other_path_reaches_a_method(contract_path: Path, gateway: Gateway, http: httpx.Client) -> None:
    for verb, url in stray_requests(contract_path):
        response = http.request(verb.upper(), url, json={} if verb != "get" else None)
        assert gateway.recorder.take() == [], f"{verb.upper()} {url} reached a method"
        assert response.status_code in {404, 405}, f"{verb.upper()} {url} → {response.status_code}"
        body = response.json()
        if url.startswith(("/v1/messages", "/crosscompute.v1.MessagesService/")):
            assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, (url, body)
        elif url.startswith(
            ("/v1", "/crosscompute.v1.InferenceService/", "/crosscompute.v1.ResponsesService/")
        ):
            assert set(body["error"]) >= {"message", "type", "code"}, body
        else:
            assert body.get("ok") is False and set(body["error"]) == {"code", "message"}, (url, body)


def test_native_grpc_is_refused_on_the_public_port(gateway: Gateway) -> None:
    """gRPC through Envoy's public listener would bypass the REST surface (and reach AdminService)."""
    import grpc
    from crosscompute.v1 import admin_service_pb2_grpc, system_service_pb2_grpc

    public = gateway.base_url.removeprefix("http://")
    with grpc.insecure_channel(public) as channel:
        for call in (
            lambda: system_service_pb2_grpc.SystemServiceStub(channel).GetHealth(
                system_service_pb2.GetHealthRequest(), timeout=5
            ),
            lambda: admin_service_pb2_grpc.AdminServiceStub(channel).GetAccount(
                admin_service_pb2.GetAccountRequest(account_id="x"), timeout=5
            ),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert gateway.recorder.take() == []
