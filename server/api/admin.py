"""AdminService: gRPC only, guarded by the administrator token in metadata."""

from __future__ import annotations

from typing import Any

import grpc
from crosscompute.v1 import admin_service_pb2 as pb
from crosscompute.v1 import admin_service_pb2_grpc as pb_grpc

from server.api.metadata import ADMIN_TOKEN_HEADER
from server.domain.admin import Administration
from server.interceptors.wrapping import metadata_value

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Translates between admin messages and `Administration`."""

    def __init__(self, administration: Administration) -> None:
        self._administration = administration

    async def GrantCredits(
        self, request: pb.GrantCreditsRequest, context: Context
    ) -> pb.GrantCreditsResponse:
        self._administration.check_token(metadata_value(context, ADMIN_TOKEN_HEADER))
        result = await self._administration.grant(
            request.account_id, request.amount_micro_credits, request.idempotency_key, request.reason
        )
        return pb.GrantCreditsResponse(
            entry_id=result.entry_id, applied=result.applied, balance_micro_credits=result.balance_micro
        )

    async def GetAccount(self, request: pb.GetAccountRequest, context: Context) -> pb.GetAccountResponse:
        self._administration.check_token(metadata_value(context, ADMIN_TOKEN_HEADER))
        lookup = request.WhichOneof("lookup")
        summary = await self._administration.account(**({lookup: getattr(request, lookup)} if lookup else {}))
        return pb.GetAccountResponse(
            account_id=summary.account.id,
            kind=summary.account.kind,
            external_id=summary.account.external_id,
            balance_micro_credits=summary.account.balance_micro,
            key_count=summary.key_count,
        )
