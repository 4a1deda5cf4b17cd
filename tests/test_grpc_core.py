"""The gRPC side: health, reflection, the gRPC-only AdminService, and error mapping in one place."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from crosscompute.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.app import SERVICE_NAMES
from server.domain.errors import PaymentRequired, RateLimited
from server.interceptors import default_interceptors
from tests.support.gateway import Gateway


def trailers(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    metadata: Any = error.trailing_metadata() or ()
    return {str(key): value for key, value in metadata}


async def test_grpc_health_reports_every_service_serving(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", *SERVICE_NAMES):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_reflection_lists_every_service_including_admin(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for response in stub.ServerReflectionInfo(ask()):
            names |= {service.name for service in response.list_services_response.service}
    assert set(SERVICE_NAMES) <= names
    assert "crosscompute.v1.AdminService" in names
    assert "grpc.health.v1.Health" in names


class FailingSystem(system_service_pb2_grpc.SystemServiceServicer):
    """Raises what each test needs."""

    async def GetHealth(self, request: Any, context: Any) -> Any:
        raise ValueError("database password is hunter2")

    async def GetConfig(self, request: Any, context: Any) -> Any:
        raise RateLimited("slow down", reason="REGISTRATION_RATE_LIMITED", headers={"Retry-After": "30"})


class FailingInference(inference_service_pb2_grpc.InferenceServiceServicer):
    """A streaming method that fails before its first message."""

    async def ListModels(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def GetModel(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def CreateChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        raise PaymentRequired("not enough credits", reason="INSUFFICIENT_CREDITS", param="max_tokens")
        yield  # an async generator, like the real one


@pytest.fixture
async def failing_server() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=default_interceptors())
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(FailingSystem(), server)
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(FailingInference(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_an_unexpected_error_is_internal_and_leaks_nothing(
    failing_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(failing_server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await system_service_pb2_grpc.SystemServiceStub(channel).GetHealth(
                system_service_pb2.GetHealthRequest()
            )
    error = raised.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    assert "hunter2" not in str(trailers(error))
    body = json.loads(trailers(error)["x-crosscompute-error-body"])
    assert body == {"ok": False, "error": {"code": "INTERNAL", "message": "internal error"}}
    assert trailers(error)["x-crosscompute-http-status"] == "500"
    assert any(record.exc_info for record in caplog.records), "the cause is logged for operators"


async def test_a_domain_error_maps_to_its_status_headers_and_api_shape(failing_server: str) -> None:
    async with grpc.aio.insecure_channel(failing_server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await system_service_pb2_grpc.SystemServiceStub(channel).GetConfig(
                system_service_pb2.GetConfigRequest()
            )
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    metadata = trailers(error)
    assert metadata["x-crosscompute-http-status"] == "429"
    assert metadata["retry-after"] == "30"
    assert json.loads(metadata["x-crosscompute-error-body"]) == {
        "ok": False,
        "error": {"code": "REGISTRATION_RATE_LIMITED", "message": "slow down"},
    }


async def test_a_streaming_method_error_takes_openai_shape(failing_server: str) -> None:
    async with grpc.aio.insecure_channel(failing_server) as channel:
        call = inference_service_pb2_grpc.InferenceServiceStub(channel).CreateChatCompletion(
            inference_service_pb2.CreateChatCompletionRequest()
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
    error = raised.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    metadata = trailers(error)
    assert metadata["x-crosscompute-http-status"] == "402"
    assert json.loads(metadata["x-crosscompute-error-body"]) == {
        "error": {
            "message": "not enough credits",
            "type": "insufficient_quota",
            "code": "insufficient_credits",
            "param": "max_tokens",
        }
    }
