"""Top-ups: answer 402 with a challenge, or check the payment, claim its nonce, have the facilitator
verify and settle it, and credit the account once with the transaction hash."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from server.db.repositories.payments import NewPayment, PaymentRepository, PaymentRow
from server.domain.errors import (
    Conflict,
    InvalidArgument,
    PaymentRequired,
    ServiceUnavailable,
    UpstreamFailed,
)
from server.domain.key_auth import KeyPrincipal
from server.domain.payments.check import PaymentRejected, check, decode
from server.domain.payments.facilitator import FacilitatorClient, FacilitatorUnavailable
from server.domain.payments.offer import Offer, challenge

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopUpPolicy:
    """How top-ups are offered (from the settings)."""

    enabled: bool
    network: str
    asset: str
    pay_to: str
    token_name: str
    token_version: str
    default_usd: Decimal
    min_usd: Decimal
    max_usd: Decimal
    credits_per_usd: Decimal
    resource: str


@dataclass(frozen=True)
class TopUpResult:
    """A settled top-up (new, or the original one of a replayed payment) and the header to answer with."""

    payment: PaymentRow
    version: int
    response_header: tuple[str, str]


def _header(version: int, payment: PaymentRow) -> tuple[str, str]:
    receipt = {
        "success": True,
        "transaction": payment.tx_hash,
        "network": payment.network,
        "payer": payment.payer,
    }
    value = base64.b64encode(json.dumps(receipt, separators=(",", ":")).encode()).decode()
    return ("x-payment-response" if version == 1 else "payment-response", value)


class TopUps:
    """The operations behind `POST /api/agents/topup`."""

    def __init__(
        self, policy: TopUpPolicy, payments: PaymentRepository, facilitator: FacilitatorClient | None
    ) -> None:
        self._policy = policy
        self._payments = payments
        self._facilitator = facilitator

    def offer(self, amount_usd: str) -> Offer:
        """What a top-up of `amount_usd` (default when empty) must pay; 400 when out of range."""
        policy = self._policy
        try:
            amount = Decimal(amount_usd) if amount_usd else policy.default_usd
        except InvalidOperation:
            raise InvalidArgument(
                'amountUsd must be a decimal string such as "5.00"', param="amountUsd"
            ) from None
        if not amount.is_finite() or amount != amount.quantize(Decimal("0.000001")):
            raise InvalidArgument("amountUsd must have at most 6 decimal places", param="amountUsd")
        if not policy.min_usd <= amount <= policy.max_usd:
            raise InvalidArgument(
                f"amountUsd must be between {policy.min_usd} and {policy.max_usd}", param="amountUsd"
            )
        return Offer(
            network=policy.network,
            asset=policy.asset,
            pay_to=policy.pay_to,
            amount_usd=amount,
            resource=policy.resource,
            token_name=policy.token_name,
            token_version=policy.token_version,
        )

    def _required(self, offer: Offer, error: str, reason: str) -> PaymentRequired:
        body, header = challenge(offer, error)
        return PaymentRequired(error, reason=reason, body=body, headers={"payment-required": header})

    async def top_up(
        self, principal: KeyPrincipal, amount_usd: str, header_name: str | None, header_value: str | None
    ) -> TopUpResult:
        if not self._policy.enabled or self._facilitator is None:
            raise ServiceUnavailable("x402 top-ups are not enabled on this gateway", reason="X402_DISABLED")
        offer = self.offer(amount_usd)
        if header_name is None or not header_value:
            raise self._required(offer, "payment required: pay with x402 to buy credits", "PAYMENT_REQUIRED")
        presented = decode(header_value, header_name)
        try:
            check(presented, offer)
        except PaymentRejected as rejected:
            raise self._required(offer, f"{rejected.reason}: {rejected.message}", rejected.reason) from None
        credits_micro = int(offer.amount_usd * self._policy.credits_per_usd * 1_000_000)
        claimed, payment = await self._payments.claim(
            NewPayment(
                account_id=principal.account_id,
                key_id=principal.key_id,
                version=presented.version,
                network=presented.network,
                asset=offer.asset,
                payer=presented.payer,
                pay_to=offer.pay_to,
                nonce=presented.nonce,
                amount_atomic=offer.amount_atomic,
                amount_usd_micro=int(offer.amount_usd * 1_000_000),
                credits_micro=credits_micro,
            )
        )
        if not claimed:
            if payment.account_id != principal.account_id:
                raise Conflict(
                    "this payment was already used by another account", reason="PAYMENT_ALREADY_USED"
                )
            if payment.status == "settled":
                # A replay: the original top-up, credited once, and nothing more.
                return TopUpResult(payment, presented.version, _header(presented.version, payment))
            raise Conflict("this payment is being settled by another request", reason="PAYMENT_IN_PROGRESS")
        requirements = offer.v1_requirements() if presented.version == 1 else offer.v2_requirements()
        try:
            valid, why = await self._facilitator.verify(presented.version, presented.payload, requirements)
            if not valid:
                await self._payments.fail(payment.id, f"verify: {why}")
                raise self._required(
                    offer, f"the facilitator rejected the payment: {why}", "FACILITATOR_REJECTED"
                )
            settlement = await self._facilitator.settle(presented.version, presented.payload, requirements)
        except FacilitatorUnavailable as error:
            await self._payments.fail(payment.id, f"facilitator unavailable: {error}")
            logger.warning("x402 facilitator unavailable: %s", error)
            raise ServiceUnavailable(
                "the payment facilitator is unavailable; nothing was credited: retry the same payment",
                reason="FACILITATOR_UNAVAILABLE",
            ) from None
        if not settlement.success or not settlement.transaction:
            await self._payments.fail(payment.id, f"settle: {settlement.reason}")
            raise UpstreamFailed(
                f"the facilitator could not settle the payment: {settlement.reason or 'no transaction'}",
                reason="SETTLEMENT_FAILED",
            )
        settled = await self._payments.settle(
            payment.id, settlement.transaction, principal.account_id, principal.key_id
        )
        return TopUpResult(settled, presented.version, _header(presented.version, settled))
