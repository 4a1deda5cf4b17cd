"""AgentsService: registration, the agent's own account and usage. Top-ups come with x402."""

from __future__ import annotations

from typing import Any

import grpc
from crosscompute.v1 import agents_service_pb2 as pb
from crosscompute.v1 import agents_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from server.api.convert import key_fields, remaining_micro
from server.api.http import send_http_status
from server.api.metadata import bearer_token
from server.db.repositories.accounts import AccountRow, KeyRow
from server.domain.agents import AgentAccounts
from server.domain.credits import micro_to_wire
from server.domain.errors import NotImplementedYet
from server.domain.key_auth import ApiKeyAuthenticator
from server.interceptors.wrapping import metadata_value

Context = grpc.aio.ServicerContext[Any, Any]


def agent_key(key: KeyRow) -> pb.AgentKey:
    return pb.AgentKey(**key_fields(key))


def agent_account(account: AccountRow, name: str, skill_md_url: str) -> pb.AgentAccount:
    return pb.AgentAccount(
        id=account.id,
        agent_id=account.external_id,
        name=name,
        skill_md_url=skill_md_url,
        credits_purchased=micro_to_wire(account.purchased_micro),
    )


def client_address(context: Context) -> str:
    """The caller's address: the last hop Envoy appended to x-forwarded-for, else the gRPC peer."""
    forwarded = metadata_value(context, "x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[-1].strip()
    return context.peer()


class AgentsServicer(pb_grpc.AgentsServiceServicer):
    """Translates between agent messages and `AgentAccounts`."""

    def __init__(self, agents: AgentAccounts, authenticator: ApiKeyAuthenticator) -> None:
        self._agents = agents
        self._authenticator = authenticator

    async def RegisterAgent(
        self, request: pb.RegisterAgentRequest, context: Context
    ) -> pb.RegisterAgentResponse:
        registration = await self._agents.register(
            request.agent_id,
            request.name,
            request.skill_md_url,
            presented_secret=metadata_value(context, "x-agent-registration-secret"),
            presented_key=bearer_token(context),
            client_address=client_address(context),
        )
        if registration.created:
            await send_http_status(context, 201)
        secret = (
            struct_pb2.Value(string_value=registration.secret)
            if registration.secret
            else struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
        )
        return pb.RegisterAgentResponse(
            ok=True,
            created=registration.created,
            account=agent_account(registration.account, registration.name, registration.skill_md_url),
            key=agent_key(registration.key),
            api_key=secret,
        )

    async def GetCurrentAgent(
        self, request: pb.GetCurrentAgentRequest, context: Context
    ) -> pb.GetCurrentAgentResponse:
        view = await self._agents.view(await self._authenticator.authenticate(bearer_token(context)))
        return pb.GetCurrentAgentResponse(
            ok=True,
            account=agent_account(view.account, view.name, view.skill_md_url),
            key=agent_key(view.key),
        )

    async def GetAgentUsage(
        self, request: pb.GetAgentUsageRequest, context: Context
    ) -> pb.GetAgentUsageResponse:
        view = await self._agents.view(await self._authenticator.authenticate(bearer_token(context)))
        usage = pb.AgentUsage(
            agent_id=view.agent_id,
            key_prefix=view.key.prefix,
            used_credits=micro_to_wire(view.key.used_micro),
            remaining_credits=micro_to_wire(remaining_micro(view.key)),
            credits_purchased=micro_to_wire(view.account.purchased_micro),
            request_count=view.request_count,
        )
        if view.key.quota_micro is not None:
            usage.quota_credits = micro_to_wire(view.key.quota_micro)
        return pb.GetAgentUsageResponse(ok=True, usage=usage)

    async def TopUpCredits(
        self, request: pb.TopUpCreditsRequest, context: Context
    ) -> pb.TopUpCreditsResponse:
        raise NotImplementedYet("TopUpCredits is not implemented yet")
