"""Services of the contract whose methods are not built yet.

They are registered so that every route reaches its method, and each method says honestly that it
is not built: gRPC UNIMPLEMENTED, HTTP 501 in the route's JSON error shape. Each issue that builds
a service replaces its class here with a real servicer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

from crosscompute.v1 import (
    accounts_service_pb2_grpc,
    admin_service_pb2_grpc,
    agents_service_pb2_grpc,
    inference_service_pb2_grpc,
)

from server.domain.errors import NotImplementedYet


def _unbuilt(method: str) -> NoReturn:
    raise NotImplementedYet(f"{method} is not implemented yet")


class AccountsServicer(accounts_service_pb2_grpc.AccountsServiceServicer):
    """People: sign-in, profiles and API keys (not built yet)."""

    async def GetMe(self, request: Any, context: Any) -> Any:
        _unbuilt("GetMe")

    async def BootstrapAccount(self, request: Any, context: Any) -> Any:
        _unbuilt("BootstrapAccount")

    async def ListApiKeys(self, request: Any, context: Any) -> Any:
        _unbuilt("ListApiKeys")

    async def CreateApiKey(self, request: Any, context: Any) -> Any:
        _unbuilt("CreateApiKey")

    async def DeactivateApiKey(self, request: Any, context: Any) -> Any:
        _unbuilt("DeactivateApiKey")


class AgentsServicer(agents_service_pb2_grpc.AgentsServiceServicer):
    """Agents: registration, usage and x402 top-ups (not built yet)."""

    async def RegisterAgent(self, request: Any, context: Any) -> Any:
        _unbuilt("RegisterAgent")

    async def GetCurrentAgent(self, request: Any, context: Any) -> Any:
        _unbuilt("GetCurrentAgent")

    async def GetAgentUsage(self, request: Any, context: Any) -> Any:
        _unbuilt("GetAgentUsage")

    async def TopUpCredits(self, request: Any, context: Any) -> Any:
        _unbuilt("TopUpCredits")


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    """The OpenAI-compatible inference API (not built yet)."""

    async def ListModels(self, request: Any, context: Any) -> Any:
        _unbuilt("ListModels")

    async def GetModel(self, request: Any, context: Any) -> Any:
        _unbuilt("GetModel")

    async def CreateChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        _unbuilt("CreateChatCompletion")
        yield  # a streaming method, like the real one


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """gRPC-only administration (not built yet)."""

    async def GrantCredits(self, request: Any, context: Any) -> Any:
        _unbuilt("GrantCredits")

    async def GetAccount(self, request: Any, context: Any) -> Any:
        _unbuilt("GetAccount")
