"""Services of the contract whose methods are not built yet.

They are registered so that every route reaches its method; each method answers gRPC UNIMPLEMENTED
(HTTP 501 in the route's JSON error shape) through the generated base class, until its issue
replaces the class here with a real servicer.
"""

from __future__ import annotations

from crosscompute.v1 import accounts_service_pb2_grpc, admin_service_pb2_grpc, agents_service_pb2_grpc
from crosscompute.v1 import inference_service_pb2_grpc


class AccountsServicer(accounts_service_pb2_grpc.AccountsServiceServicer):
    """People: sign-in, profiles and API keys (not built yet)."""


class AgentsServicer(agents_service_pb2_grpc.AgentsServiceServicer):
    """Agents: registration, usage and x402 top-ups (not built yet)."""


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    """The OpenAI-compatible inference API (not built yet)."""


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """gRPC-only administration (not built yet)."""
