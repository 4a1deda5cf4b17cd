"""AdminService: gRPC only, guarded by the administrator token in metadata."""

from __future__ import annotations

from typing import Any

import grpc
from crosscompute.v1 import admin_service_pb2 as pb
from crosscompute.v1 import admin_service_pb2_grpc as pb_grpc

from server.api.convert import timestamp
from server.api.metadata import ADMIN_TOKEN_HEADER
from server.domain.admin import Administration, PaymentView
from server.interceptors.wrapping import metadata_value

Context = grpc.aio.ServicerContext[Any, Any]

OUTCOMES = {
    pb.ResolvePaymentRequest.OUTCOME_SETTLED: "settled",
    pb.ResolvePaymentRequest.OUTCOME_FAILED: "failed",
}


def payment(view: PaymentView) -> pb.Payment:
    row = view.payment
    message = pb.Payment(
        id=row.id,
        account_id=row.account_id,
        status=row.status,
        network=row.network,
        payer=row.payer,
        nonce=row.nonce,
        amount_usd_micro=row.amount_usd_micro,
        credits_micro=row.credits_micro,
        tx_hash=row.tx_hash,
        reason=row.error_reason,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        events=[
            pb.PaymentEvent(
                from_status=event.from_status,
                to_status=event.to_status,
                actor=event.actor,
                detail=event.detail,
                create_time=timestamp(event.created_at),
            )
            for event in view.events
        ],
    )
    if row.valid_before:
        message.valid_before.FromSeconds(row.valid_before)
    return message


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

    async def ListPaymentsInDoubt(
        self, request: pb.ListPaymentsInDoubtRequest, context: Context
    ) -> pb.ListPaymentsInDoubtResponse:
        self._administration.check_token(metadata_value(context, ADMIN_TOKEN_HEADER))
        views = await self._administration.payments_in_doubt(request.page_size)
        return pb.ListPaymentsInDoubtResponse(payments=[payment(view) for view in views])

    async def ResolvePayment(
        self, request: pb.ResolvePaymentRequest, context: Context
    ) -> pb.ResolvePaymentResponse:
        self._administration.check_token(metadata_value(context, ADMIN_TOKEN_HEADER))
        view = await self._administration.resolve_payment(
            request.payment_id, OUTCOMES.get(request.outcome, ""), request.tx_hash, request.reason
        )
        return pb.ResolvePaymentResponse(payment=payment(view))
