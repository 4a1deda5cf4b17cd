"""Exact HTTP statuses and JSON bodies through the real Envoy, for every error kind and for the
success statuses gRPC cannot express (201, 503 with a body). A stand-in servicer raises on demand,
behind the real interceptors and the real Envoy configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import openai
import pytest
from crosscompute.v1 import (
    inference_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
)

from server.api.http import send_http_status
from server.domain.errors import DomainError, ErrorKind
from server.interceptors.errors import MAPPINGS
from server.interceptors.wrapping import metadata_value
from tests.support.standin import stand_in_behind_envoy

ERRORS = {
    kind.value: type(kind.name.title(), (DomainError,), {"kind": kind, "default_reason": kind.name})
    for kind in ErrorKind
}


def raise_requested(context: Any) -> None:
    """Raise the error named by the `x-test-error` header, with the extras the test asks for."""
    kind = metadata_value(context, "x-test-error")
    if kind is None:
        return
    body = (
        {"x402Version": 1, "error": "payment required", "accepts": []} if kind == "payment_required" else None
    )
    raise ERRORS[kind](
        f"{kind} happened", headers={"PAYMENT-REQUIRED": "eyJ4NDAyVmVyc2lvbiI6Mn0="}, body=body
    )


class StandInSystem(system_service_pb2_grpc.SystemServiceServicer):
    async def GetHealth(self, request: Any, context: Any) -> Any:
        raise_requested(context)
        await send_http_status(context, 503)
        return system_service_pb2.GetHealthResponse(ok=False)

    async def GetConfig(self, request: Any, context: Any) -> Any:
        raise_requested(context)
        await send_http_status(context, 201)
        return system_service_pb2.GetConfigResponse(ok=True, supabase_url="https://x.supabase.co")


class StandInInference(inference_service_pb2_grpc.InferenceServiceServicer):
    async def ListModels(self, request: Any, context: Any) -> Any:
        raise_requested(context)
        raise AssertionError("every call names an error")

    async def GetModel(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def CreateChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        raise NotImplementedError
        yield


def register(server: grpc.aio.Server) -> None:
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(StandInSystem(), server)
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(StandInInference(), server)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with stand_in_behind_envoy(register) as url:
        yield url


@pytest.mark.parametrize(
    "kind", [kind for kind in ErrorKind if kind is not ErrorKind.PAYMENT_REQUIRED], ids=str
)
def test_api_errors_take_their_exact_status_and_api_shape(base_url: str, kind: ErrorKind) -> None:
    response = httpx.get(f"{base_url}/api/config", headers={"x-test-error": kind.value})
    assert response.status_code == MAPPINGS[kind].http_status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": False, "error": {"code": kind.name, "message": f"{kind.value} happened"}}
    assert response.headers["payment-required"] == "eyJ4NDAyVmVyc2lvbiI6Mn0="
    assert not [
        name
        for name in response.headers
        if name.startswith(("grpc-", "x-crosscompute-http", "x-crosscompute-error"))
    ]


@pytest.mark.parametrize("kind", list(ErrorKind), ids=str)
def test_openai_errors_take_their_exact_status_and_openai_shape(base_url: str, kind: ErrorKind) -> None:
    response = httpx.get(f"{base_url}/v1/models", headers={"x-test-error": kind.value})
    assert response.status_code == MAPPINGS[kind].http_status
    if kind is ErrorKind.PAYMENT_REQUIRED:
        assert response.json() == {"x402Version": 1, "error": "payment required", "accepts": []}
        return
    assert response.json() == {
        "error": {
            "message": f"{kind.value} happened",
            "type": MAPPINGS[kind].openai_type,
            "code": kind.name.lower(),
            "param": None,
        }
    }


def test_a_custom_body_replaces_the_shape_with_its_status(base_url: str) -> None:
    response = httpx.get(f"{base_url}/api/config", headers={"x-test-error": "payment_required"})
    assert response.status_code == 402
    assert response.json() == {"x402Version": 1, "error": "payment required", "accepts": []}
    assert response.headers["payment-required"] == "eyJ4NDAyVmVyc2lvbiI6Mn0="


def test_success_statuses_gRPC_cannot_express_arrive_with_their_body(base_url: str) -> None:
    created = httpx.get(f"{base_url}/api/config")
    assert created.status_code == 201
    assert created.json()["supabaseUrl"] == "https://x.supabase.co"
    unavailable = httpx.get(f"{base_url}/health")
    assert unavailable.status_code == 503
    assert unavailable.json()["ok"] is False


@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        (ErrorKind.INVALID_ARGUMENT, openai.BadRequestError),
        (ErrorKind.UNAUTHENTICATED, openai.AuthenticationError),
        (ErrorKind.PERMISSION_DENIED, openai.PermissionDeniedError),
        (ErrorKind.NOT_FOUND, openai.NotFoundError),
        (ErrorKind.CONFLICT, openai.ConflictError),
        (ErrorKind.RATE_LIMITED, openai.RateLimitError),
        (ErrorKind.UNAVAILABLE, openai.InternalServerError),
    ],
    ids=str,
)
def test_the_openai_client_raises_the_matching_exception(
    base_url: str, kind: ErrorKind, exception: type[openai.APIStatusError]
) -> None:
    with (
        openai.OpenAI(base_url=f"{base_url}/v1", api_key="cc_live_x", max_retries=0) as client,
        pytest.raises(exception) as raised,
    ):
        client.models.list(extra_headers={"x-test-error": kind.value})
    assert raised.value.status_code == MAPPINGS[kind].http_status
    assert raised.value.code == kind.name.lower()
    assert raised.value.message.endswith(f"{kind.value} happened")
