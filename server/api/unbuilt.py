"""Services of the contract whose methods are not built yet.

They are registered so that every route reaches its method, and each method says honestly that it
is not built: gRPC UNIMPLEMENTED, HTTP 501 in the route's JSON error shape. Each issue that builds
a service replaces its class here with a real servicer.
"""

from __future__ import annotations

from typing import Any, NoReturn

from crosscompute.v1 import agents_service_pb2_grpc

from server.domain.errors import NotImplementedYet


def _unbuilt(method: str) -> NoReturn:
    raise NotImplementedYet(f"{method} is not implemented yet")


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
