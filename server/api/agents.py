"""AgentsService: registration, the agent's own account and usage. Top-ups come with x402."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc
from crosscompute.v1 import agents_service_pb2 as pb
from crosscompute.v1 import agents_service_pb2_grpc as pb_grpc
from google.api import httpbody_pb2
from google.protobuf import struct_pb2

from server.api.convert import key_fields, nullable_text, quota_credits, remaining_micro, timestamp
from server.api.http import send_http_status
from server.api.metadata import bearer_token
from server.db.repositories.accounts import AccountRow, KeyRow
from server.db.repositories.usage import UsageRepository
from server.domain.agents import AgentAccounts
from server.domain.credits import micro_to_wire
from server.domain.errors import DomainError
from server.domain.key_auth import ApiKeyAuthenticator
from server.domain.payments.check import PAYMENT_SIGNATURE, X_PAYMENT
from server.domain.payments.topup import TopUps
from server.interceptors.wrapping import metadata_value

Context = grpc.aio.ServicerContext[Any, Any]


def agent_key(key: KeyRow) -> pb.AgentKey:
    return pb.AgentKey(**key_fields(key))


def agent_account(account: AccountRow, name: str, skill_md_url: str) -> pb.AgentAccount:
    """The agent's account; an empty name or URL (never set) is JSON null."""
    return pb.AgentAccount(
        id=account.id,
        agent_id=account.external_id,
        name=nullable_text(name),
        skill_md_url=nullable_text(skill_md_url),
        credits_purchased=micro_to_wire(account.purchased_micro),
    )


def usd_text(micro: int) -> str:
    """Dollars as a decimal string with at least two places (`5.00`, `0.123456`)."""
    amount = Decimal(micro) / 1_000_000
    return f"{amount:.2f}" if amount == amount.quantize(Decimal("0.01")) else f"{amount.normalize():f}"


def client_address(context: Context) -> str:
    """The caller's address: the last hop Envoy appended to x-forwarded-for, else the gRPC peer."""
    forwarded = metadata_value(context, "x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[-1].strip()
    return context.peer()


class AgentsServicer(pb_grpc.AgentsServiceServicer):
    """Translates between agent messages and `AgentAccounts`."""

    def __init__(
        self,
        agents: AgentAccounts,
        authenticator: ApiKeyAuthenticator,
        top_ups: TopUps,
        usage: UsageRepository,
        skill: str,
    ) -> None:
        self._agents = agents
        self._authenticator = authenticator
        self._top_ups = top_ups
        self._usage = usage
        self._skill = skill

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
            quota_credits=quota_credits(view.key),
            used_credits=micro_to_wire(view.key.used_micro),
            remaining_credits=micro_to_wire(remaining_micro(view.key)),
            credits_purchased=micro_to_wire(view.account.purchased_micro),
            request_count=view.request_count,
        )
        return pb.GetAgentUsageResponse(ok=True, usage=usage)

    async def ListAgentUsageModels(
        self, request: pb.ListAgentUsageModelsRequest, context: Context
    ) -> pb.ListAgentUsageModelsResponse:
        view = await self._agents.view(await self._authenticator.authenticate(bearer_token(context)))
        rows = await self._usage.by_model(view.account.id)
        return pb.ListAgentUsageModelsResponse(
            ok=True,
            items=[
                pb.ModelUsage(
                    provider=row.provider,
                    model=row.model,
                    input_tokens=row.input_tokens,
                    output_tokens=row.output_tokens,
                    total_tokens=row.input_tokens + row.output_tokens,
                    request_count=row.request_count,
                    last_request_at=timestamp(row.last_request_at),
                    updated_at=timestamp(row.updated_at),
                )
                for row in rows
            ],
        )

    async def GetAgentSkill(
        self, request: pb.GetAgentSkillRequest, context: Context
    ) -> pb.GetAgentSkillResponse:
        return pb.GetAgentSkillResponse(
            body=httpbody_pb2.HttpBody(content_type="text/markdown; charset=utf-8", data=self._skill.encode())
        )

    async def TopUpCredits(
        self, request: pb.TopUpCreditsRequest, context: Context
    ) -> pb.TopUpCreditsResponse:
        signature, legacy = metadata_value(context, PAYMENT_SIGNATURE), metadata_value(context, X_PAYMENT)
        header_name = PAYMENT_SIGNATURE if signature else X_PAYMENT if legacy else None
        # Every top-up answer says what payment header the server saw.
        seen = {
            "x-crosscompute-payment-header-present": "true" if header_name else "false",
            "x-crosscompute-payment-header-kind": header_name or "none",
        }
        try:
            principal = await self._authenticator.authenticate(bearer_token(context))
            self._agents.require_agent(principal)
            result = await self._top_ups.top_up(
                principal, request.amount_usd, header_name, signature or legacy
            )
        except DomainError as error:
            error.headers = {**error.headers, **seen}
            raise
        await context.send_initial_metadata((*seen.items(), result.response_header))
        payment = result.payment
        view = await self._agents.view(principal)
        return pb.TopUpCreditsResponse(
            ok=True,
            topup=pb.TopUp(
                id=payment.id,
                amount_usd=usd_text(payment.amount_usd_micro),
                credits=micro_to_wire(payment.credits_micro),
                tx_hash=payment.tx_hash,
                network=payment.network,
                payer=payment.payer,
            ),
            account=agent_account(view.account, view.name, view.skill_md_url),
            key=agent_key(view.key),
        )
